"""Where the time of one translation training iteration goes, per op family, in JAX and in PyTorch.

    python tools/profile_training.py                      # 128x128, batch 1 -> benchmarks/profile_training_cpu.json
    python tools/profile_training.py --size 256 --repeats 3 --top 25

The same iteration as `tools/benchmark_training.py` (docs/reference.md §2.5, official widths), profiled on
both sides after a warm-up:

* JAX: the compiled `i2i_step.train_step` under `jax.profiler.trace`. XLA:CPU runs the program as thunks
  (one per fusion, convolution, dot, copy, ...), each named after its HLO instruction; the trace gives every
  thunk's duration, and the optimised HLO (`compiled.as_text()`) says what each one computes. A fusion is
  put in the family of the heaviest op it contains (convolution > dot > reduce > scatter > gather >
  concatenate > pad > slice > transpose/copy > elementwise). XLA runs independent thunks on several
  threads at once, so the family sums can add up to more than the wall time.
* PyTorch: `tests/torch_reference/cut_training.training_iteration` under `torch.profiler`; each aten op's
  self CPU time, grouped into the same families by name.

The JSON has the per-family table (ms per iteration, the mean over `--repeats` profiled iterations), the
heaviest JAX thunks with their HLO op and shapes, the heaviest PyTorch ops, and the wall times. The findings
are in docs/performance.md.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.benchmark_report import add_keep_memory_flag, keep_memory, write_report  # noqa: E402
from tools.benchmark_training import jax_runner, torch_runner  # noqa: E402

FAMILIES = ("convolution", "dot (GEMM)", "reduce", "scatter", "gather", "concatenate", "pad", "slice",
            "transpose/copy", "elementwise", "optimizer (Adam)", "other")
# A fusion's family: the first of these opcodes that it contains.
_HLO_PRIORITY = [
    ("convolution", "convolution"), ("dot", "dot (GEMM)"), ("reduce", "reduce"), ("reduce-window", "reduce"),
    ("scatter", "scatter"), ("gather", "gather"), ("concatenate", "concatenate"), ("pad", "pad"),
    ("slice", "slice"), ("dynamic-slice", "slice"), ("dynamic-update-slice", "slice"),
    ("transpose", "transpose/copy"), ("copy", "transpose/copy"), ("reverse", "transpose/copy"),
]
# PyTorch aten ops by name (self CPU time); anything unlisted is "elementwise".
_TORCH_FAMILIES = [
    (r"convolution|mkldnn_conv|conv2d|conv_transpose", "convolution"),
    (r"^aten::(mm|addmm|bmm|matmul|linear|dot)$", "dot (GEMM)"),
    (r"batch_norm|instance_norm|^aten::(sum|mean|var|std|norm|linalg_vector_norm|amax|max|logsumexp)$", "reduce"),
    (r"scatter|index_put|index_add|embedding_dense_backward|index_backward", "scatter"),
    (r"^aten::(index|index_select|gather|take|take_along_dim)$", "gather"),
    (r"^aten::(cat|stack)$", "concatenate"),
    (r"pad", "pad"),
    (r"^aten::(slice|narrow|select|split|chunk|slice_backward|select_backward)$", "slice"),
    (r"^aten::(copy_|clone|contiguous|permute|transpose|t|to|_to_copy|flip|reshape|view|_unsafe_view|"
     r"as_strided|expand|empty_like|empty|zeros|zeros_like|fill_|zero_|detach|alias|unsqueeze|squeeze|"
     r"flatten|cross_entropy_loss|resize_)$", "transpose/copy"),
    (r"_foreach|adam", "optimizer (Adam)"),
]


def _computations(hlo_text: str):
    """{computation name: [(instruction name, opcode, operand/shape text, called computations)]}."""
    comps, current = {}, None
    for line in hlo_text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head and not line.startswith(" "):
            current = comps.setdefault(head.group(1), [])
            continue
        m = re.match(r"^\s+(?:ROOT )?%?([\w.\-]+) = (.+?) ([a-z][\w\-]*)\((.*)$", line)
        if m and current is not None:
            called = re.findall(r"(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-,% ]+)\}?",
                                m.group(4))
            names = [c.strip(" %") for group in called for c in group.split(",")]
            op_name = re.search(r'op_name="([^"]*)"', m.group(4))
            current.append((m.group(1), m.group(3), m.group(2), names, op_name.group(1) if op_name else ""))
    return comps


def _opcodes(comps, name, seen=None):
    seen = set() if seen is None else seen
    if name in seen or name not in comps:
        return set()
    seen.add(name)
    ops = set()
    for _, opcode, _, called, _ in comps[name]:
        ops.add(opcode)
        for c in called:
            ops |= _opcodes(comps, c, seen)
    return ops


def hlo_index(hlo_text: str):
    """{instruction name: (family, opcode, result shape, JAX op name)} for every instruction of the program."""
    comps = _computations(hlo_text)
    # oneDNN's kernel gradient (scenimefy_jax.kernels.onednn) is a custom call: count it as a convolution.
    from scenimefy_jax.kernels.onednn import TARGET

    wgrad_calls = set(re.findall(rf"^\s*(?:ROOT )?%?(\S+) = .*custom_call_target=\"{TARGET}\"", hlo_text, flags=re.M))
    index = {}
    for instructions in comps.values():
        for name, opcode, shape, called, op_name in instructions:
            ops = {opcode}
            for c in called:
                ops |= _opcodes(comps, c)
            if opcode == "custom-call":
                family = "convolution" if name in wgrad_calls else "other"
            else:
                family = next((fam for op, fam in _HLO_PRIORITY if op in ops), "elementwise")
            index[name] = (family, opcode, shape.split("{")[0], op_name.removeprefix("jit(train_step)/"))
    return index


def scope(op_name: str) -> str:
    """The network and pass an HLO op belongs to, from its JAX op name: "jvp(ResnetGenerator)" is a forward
    pass that is differentiated, "transpose(jvp(ResnetGenerator))" its backward pass, "ResnetGenerator" a
    forward pass without gradient; loss and optimiser arithmetic outside the networks is "other"."""
    head = op_name.split("/")[0]
    network = re.sub(r"^(transpose\()?(jvp\()?|\)+$", "", head)
    if not re.fullmatch(r"[A-Z]\w*", network):
        return "shuffle (patch ids)" if "_shuffle" in head else "other"
    return ("backward " if "transpose(" in head else "forward (for grad) " if "jvp(" in head else "forward ") + network


def wall_shares(thunks) -> collections.Counter:
    """{thunk name: wall time in µs}, a moment shared equally by the thunks running at it.

    XLA:CPU runs independent thunks on several threads at once; a copy that runs beside a convolution
    takes longer than alone, but most of its duration is not added to the iteration's wall time.
    Splitting every moment among the thunks then running makes the shares add up to the busy time."""
    edges = sorted({e["ts"] for e in thunks} | {e["ts"] + e["dur"] for e in thunks})
    starts = collections.defaultdict(list)
    ends = collections.defaultdict(list)
    for i, e in enumerate(thunks):
        starts[e["ts"]].append(i)
        ends[e["ts"] + e["dur"]].append(i)
    active, shares = set(), collections.Counter()
    for t0, t1 in zip(edges, edges[1:] + edges[-1:]):
        active.difference_update(ends[t0])
        active.update(starts[t0])
        if active and t1 > t0:
            for i in active:
                shares[thunks[i]["name"]] += (t1 - t0) / len(active)
    return shares


def profile_jax(h, w, repeats, trace_dir):
    import jax

    run, compile_s, compiled = jax_runner(h, w, 1, "float32", return_compiled=True)
    run()
    wall = []
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            wall.append(time.perf_counter() - t)
    (trace_file,) = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    with gzip.open(trace_file) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    index = hlo_index(compiled.as_text())
    thunks = [e for e in events if e.get("ph") == "X" and e["name"] in index]
    per_thunk = collections.Counter()
    for name, us in wall_shares(thunks).items():
        per_thunk[name] += us / 1000.0 / repeats  # µs -> ms per iteration
    families = collections.Counter()
    for name, ms in per_thunk.items():
        families[index[name][0]] += ms
    scopes = collections.Counter()
    for name, ms in per_thunk.items():
        scopes[scope(index[name][3])] += ms
    top = [{"thunk": n, "family": index[n][0], "opcode": index[n][1], "shape": index[n][2],
            "op_name": index[n][3], "ms": round(ms, 2)}
           for n, ms in per_thunk.most_common()]
    return {"compile_s": round(compile_s, 1), "wall_ms": round(1000 * sum(wall) / repeats, 1),
            "families_ms": dict(families), "scopes_ms": dict(scopes.most_common()),
            "thunks_ms": round(sum(per_thunk.values()), 1),
            "num_thunks": len(per_thunk), "top": top}


def torch_family(name: str) -> str:
    for pattern, family in _TORCH_FAMILIES:
        if re.search(pattern, name):
            return family
    return "elementwise"


def profile_torch(h, w, repeats):
    import torch
    from torch.profiler import ProfilerActivity, profile

    run = torch_runner(h, w)
    run()
    wall = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            wall.append(time.perf_counter() - t)
    ops = collections.Counter()
    for item in prof.key_averages():
        if item.key.startswith("aten::"):
            ops[item.key] += item.self_cpu_time_total / 1000.0 / repeats
    families = collections.Counter()
    for name, ms in ops.items():
        families[torch_family(name)] += ms
    del torch
    return {"wall_ms": round(1000 * sum(wall) / repeats, 1), "families_ms": dict(families),
            "ops_ms": round(sum(ops.values()), 1),
            "top": [{"op": n, "family": torch_family(n), "ms": round(ms, 2)} for n, ms in ops.most_common()]}


def table(jax_side, torch_side) -> str:
    rows = ["| op family | JAX ms | PyTorch ms |", "| --- | ---: | ---: |"]
    for fam in FAMILIES:
        j, t = jax_side["families_ms"].get(fam, 0.0), torch_side["families_ms"].get(fam, 0.0) if torch_side else 0.0
        if j >= 0.5 or t >= 0.5:
            rows.append(f"| {fam} | {j:.0f} | {t:.0f} |" if torch_side else f"| {fam} | {j:.0f} | |")
    rows.append(f"| **busy time (JAX thunks / aten self times)** | {jax_side['thunks_ms']:.0f} | "
                f"{torch_side['ops_ms'] if torch_side else 0:.0f} |")
    rows.append(f"| not attributed: work no traced thunk covers (asynchronous dots: their events cover the launch) | "
                f"{jax_side['wall_ms'] - jax_side['thunks_ms']:.0f} | "
                f"{torch_side['wall_ms'] - torch_side['ops_ms'] if torch_side else 0:.0f} |")
    rows.append(f"| wall time of the iteration (profiled) | {jax_side['wall_ms']:.0f} | "
                f"{torch_side['wall_ms'] if torch_side else 0:.0f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="square image side (batch 1)")
    parser.add_argument("--repeats", type=int, default=3, help="profiled iterations per side (after a warm-up)")
    parser.add_argument("--top", type=int, default=30, help="heaviest thunks / ops kept in the JSON")
    parser.add_argument("--no-torch", action="store_true", help="JAX only")
    add_keep_memory_flag(parser)
    parser.add_argument("--output", default="", help="JSON path (default: benchmarks/profile_training_<backend>.json)")
    args = parser.parse_args(argv)
    memory = keep_memory(args)

    import jax
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as trace_dir:
        jax_side = profile_jax(args.size, args.size, args.repeats, trace_dir)
    torch_side = None if args.no_torch else profile_torch(args.size, args.size, args.repeats)
    print(table(jax_side, torch_side))
    print("\nJAX by network and pass:")
    for name, ms in jax_side["scopes_ms"].items():
        print(f"  {ms:8.1f} ms  {name}")
    print("\nheaviest JAX thunks:")
    for row in jax_side["top"][: args.top]:
        print(f"  {row['ms']:8.1f} ms  {row['family']:<15} {row['opcode']:<12} {row['shape']:<24} {row['op_name'][:90]}")
    if torch_side:
        print("heaviest PyTorch ops:")
        for row in torch_side["top"][: args.top]:
            print(f"  {row['ms']:8.1f} ms  {row['family']:<15} {row['op']}")
    jax_side["top"] = jax_side["top"][: args.top]
    if torch_side:
        torch_side["top"] = torch_side["top"][: args.top]
    report = {
        "what": "one official semi_cut training iteration (docs/reference.md §2.5), batch 1, official widths, "
                "time per op family (JAX: sum of XLA:CPU thunk durations; PyTorch: aten self CPU time), "
                "ms per iteration",
        "size": args.size, "repeats": args.repeats,
        "load_average_at_end": os.getloadavg(),
        "cpu_memory": memory,
        "jax": jax_side, "torch": torch_side, "table": table(jax_side, torch_side),
    }
    backend = jax.default_backend()
    out = write_report(args.output or os.path.join(ROOT, "benchmarks", f"profile_training_{backend}.json"), report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
