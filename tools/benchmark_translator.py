"""Benchmark the translator forward pass: JAX (this package) against the PyTorch generator, same weights.

    python tools/benchmark_translator.py                       # CPU cases -> benchmarks/translator_<platform>.json
    python tools/benchmark_translator.py --quick               # smaller repeat counts
    python tools/benchmark_translator.py --cases 256x256x1     # one case

Each case reports the median forward latency after warm-up, JAX compile time separately, and
`speedup` = PyTorch median / JAX median (> 1: JAX is faster). JAX and PyTorch runs are interleaved,
so background load affects both alike. Torch uses as many threads as XLA has cores. On a GPU, the
default cases add throughput at 256x256 over batch sizes and 1920x1080 frames/s in bfloat16.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.benchmark_report import write_report  # noqa: E402


def _timeit(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run_case(case: str, dtype: str, repeats: int, torch_model, jax_params, with_torch: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import torch

    from scenimefy_jax.models.translator import ResnetGenerator

    h, w, b = (int(v) for v in case.split("x"))
    x = np.random.default_rng(0).uniform(-1, 1, (b, h, w, 3)).astype(np.float32)
    model = ResnetGenerator(dtype={"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype])
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))
    x_dev = jax.device_put(x)

    start = time.perf_counter()
    compiled = forward.lower(jax_params, x_dev).compile()
    compile_s = time.perf_counter() - start
    run_jax = lambda: compiled(jax_params, x_dev).block_until_ready()  # noqa: E731
    run_jax()  # warm-up

    result = {"case": case, "height": h, "width": w, "batch": b, "dtype": dtype, "repeats": repeats,
              "jax_compile_s": round(compile_s, 3)}
    jax_times, torch_times = [], []
    if with_torch:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
        tm = torch_model.to(device)

        def run_torch():
            with torch.no_grad():
                tm(tx)
            if device == "cuda":
                torch.cuda.synchronize()

        run_torch()  # warm-up
        for _ in range(repeats):  # interleaved: background load hits both alike
            jax_times += _timeit(run_jax, 1)
            torch_times += _timeit(run_torch, 1)
    else:
        jax_times = _timeit(run_jax, repeats)
    jax_ms = statistics.median(jax_times) * 1e3
    result["jax_median_ms"] = round(jax_ms, 2)
    result["jax_images_per_s"] = round(b / (jax_ms / 1e3), 3)
    if torch_times:
        torch_ms = statistics.median(torch_times) * 1e3
        result["torch_median_ms"] = round(torch_ms, 2)
        result["torch_images_per_s"] = round(b / (torch_ms / 1e3), 3)
        result["speedup"] = round(torch_ms / jax_ms, 3)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", help="HxWxB cases (default: 256x256x1 256x256x8 1024x1024x1)")
    parser.add_argument("--repeats", type=int, default=0, help="timed runs per case (default: 10, 3 at 1024+)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--output", default="", help="JSON path (default: benchmarks/translator_<backend>.json)")
    args = parser.parse_args(argv)

    import jax
    import torch

    from scenimefy_jax.convert import translator as convert_translator
    from tests.torch_reference import cut_networks as ref

    torch.set_num_threads(os.cpu_count() or 1)
    torch_model = ref.randomize_(ref.ResnetGenerator(), seed=0).eval()
    params = convert_translator.convert_state_dict(
        {k: v.numpy() for k, v in torch_model.state_dict().items()}
    ).params
    params = jax.device_put(params)
    backend = jax.default_backend()

    plan = [(c, "float32") for c in (args.cases or ["256x256x1", "256x256x8", "1024x1024x1"])]
    plan += [(c, "bfloat16") for c, _ in list(plan)]
    if backend == "gpu" and not args.cases:
        plan += [(f"256x256x{b}", "bfloat16") for b in (16, 32, 64)]
        plan += [("1080x1920x1", "bfloat16"), ("1080x1920x4", "bfloat16")]
    results = []
    for case, dtype in plan:
        big = int(case.split("x")[0]) >= 1024
        repeats = args.repeats or (2 if args.quick else 3) if big else (args.repeats or (3 if args.quick else 10))
        with_torch = dtype == "float32"  # PyTorch reference runs in float32, as the official code
        r = run_case(case, dtype, repeats, torch_model, params, with_torch)
        print(json.dumps(r), flush=True)
        results.append(r)

    summary = {}
    for r in results:
        if "speedup" in r:
            summary[f"speedup_{r['case']}_float32"] = r["speedup"]
    bf16 = [r for r in results if r["dtype"] == "bfloat16" and r["height"] == 256]
    if bf16:
        best = max(bf16, key=lambda r: r["jax_images_per_s"])
        summary["best_256_bfloat16_images_per_s"] = best["jax_images_per_s"]
        summary["best_256_bfloat16_batch"] = best["batch"]
    hd = [r for r in results if r["height"] == 1080]
    if hd:
        summary["frames_per_s_1920x1080_bfloat16"] = max(r["jax_images_per_s"] for r in hd)
    report = {
        "benchmark": "translator_forward",
        "settings": {"model": "ResnetGenerator ngf=64 n_blocks=9", "torch_threads": torch.get_num_threads(),
                     "timing": "median of interleaved runs after one warm-up; compile time separate",
                     "speedup": "torch_median_ms / jax_median_ms"},
        "results": results,
        "summary": summary,
    }
    out = write_report(args.output or os.path.join(ROOT, "benchmarks", f"translator_{backend}.json"), report)
    print(f"wrote {out}: {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
