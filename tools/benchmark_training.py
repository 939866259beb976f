"""Benchmark one training iteration of the translation model: the JAX step against the PyTorch reference.

    python tools/benchmark_training.py                        # CPU cases -> benchmarks/training_<backend>.json
    python tools/benchmark_training.py --cases 128x128x1 --repeats 3

Both sides run the full official iteration (docs/reference.md §2.5): G forward on x, y, x_p; D and D_p updates; the
joint G + F + F_s update with GAN, hDCE (both branches), SRC and StylePatchNCE, five Adam optimisers,
at the official widths (ngf 64, 9 blocks, ndf 64, 256 patches). The JAX side is the jitted
`i2i_step.train_step` with the state donated, exactly what the training job runs; the PyTorch side
is `tests/torch_reference/cut_training.training_iteration` (the official code's structure, batch 1
only). Timings are medians after a warm-up, JAX and PyTorch interleaved so that background load
affects both alike; `images_per_s` = batch / median step time; JAX compile time is reported apart.
Cases are HxWxB; B > 1 runs JAX only (the official code supports batch 1 only, docs/reference.md §2.10 Q6).
On a GPU the PyTorch side runs on CUDA, and the rows add the peak device memory (JAX: the process's
peak so far, so give the cases smallest first; PyTorch: `torch.cuda.max_memory_allocated`):

    python tools/benchmark_training.py --cases 256x256x1 256x256x8 256x256x32 --dtypes float32 bfloat16
`--wgrads auto gemm xla` compares the formulations of the convolution kernel gradient
(`scenimefy_jax.models.layers.conv2d`): "auto" is the default (oneDNN's through a custom call on CPU
where it is available, `scenimefy_jax.kernels.onednn`), "gemm" the per-tap GEMMs, "xla" XLA's own
transpose rule.

Like `python -m scenimefy_jax.main`, the process first keeps each execution's memory for the next
(`scenimefy_jax.kernels.cpu_memory`: glibc's main heap for large blocks, CPU executions on the calling
thread); both frameworks run under it. `--no-keep-memory` leaves the defaults, as before 2026-12-03.
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

from tools.benchmark_report import add_keep_memory_flag, keep_memory, write_report  # noqa: E402


def _batch(h, w, b, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-1, 1, (b, h, w, 3)).astype(np.float32) for k in ("x", "y", "x_p", "y_p")}


def jax_runner(h, w, b, dtype, return_compiled=False):
    import jax

    from scenimefy_jax.training import i2i_step

    hp = i2i_step.I2IHParams(compute_dtype=dtype)
    state = jax.jit(lambda k: i2i_step.create_train_state(k, hp, (h, w)))(jax.random.key(0))
    step = i2i_step.make_train_step(hp)
    batch = jax.device_put(_batch(h, w, b))
    schedule = i2i_step.EpochSchedule.for_epoch(hp, 1)
    holder = {"state": state, "i": 0}

    start = time.perf_counter()
    compiled = step.lower(state, batch, jax.random.key(1), schedule).compile()
    compile_s = time.perf_counter() - start

    def run():
        holder["i"] += 1
        holder["state"], metrics = compiled(holder["state"], batch, jax.random.key(holder["i"]), schedule)
        jax.block_until_ready(metrics)

    return (run, compile_s, compiled) if return_compiled else (run, compile_s)


def torch_runner(h, w, device="cpu"):
    import torch

    from tests.torch_reference import cut_networks as ref_g
    from tests.torch_reference import cut_training as ref

    device = torch.device(device)
    if device.type == "cuda":  # the reference makes its constants (eye, zeros) on the default device
        torch.set_default_device(device)
    torch.manual_seed(0)
    nets = {
        "G": ref_g.ResnetGenerator(), "D": ref.NLayerDiscriminator(3), "D_p": ref.NLayerDiscriminator(6),
        "F": ref.PatchSampleF(), "F_s": ref.PatchSampleF(),
    }
    opts = {k: torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999)) for k, m in nets.items()}
    batch = {k: torch.from_numpy(np.ascontiguousarray(v.transpose(0, 3, 1, 2))).to(device)
             for k, v in _batch(h, w, 1).items()}
    # Patch positions per nce layer, as PatchSampleF draws them (randperm, first 256).
    sizes = [(h + 6) * (w + 6), h * w, h * w // 4, h * w // 16, h * w // 16]
    gen = torch.Generator().manual_seed(0)

    def ids():
        return [torch.randperm(n, generator=gen, device="cpu")[: min(256, n)].to(device) for n in sizes]

    def run():
        ref.training_iteration(nets, opts, batch, ids(), ids(), epoch=1)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", help="HxWxB cases (default: 128x128x1 256x256x1 256x256x4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed iterations per case and framework")
    parser.add_argument("--dtypes", nargs="*", default=["float32"], help="JAX compute dtypes (float32, bfloat16)")
    parser.add_argument("--wgrads", nargs="*", default=["auto"], choices=["auto", "onednn", "gemm", "xla"],
                        help="conv kernel-gradient formulations")
    parser.add_argument("--no-torch", action="store_true", help="JAX only")
    add_keep_memory_flag(parser)
    parser.add_argument("--output", default="", help="JSON path (default: benchmarks/training_<backend>.json)")
    args = parser.parse_args(argv)
    memory = keep_memory(args)

    import jax
    import torch

    from scenimefy_jax.kernels import onednn
    from scenimefy_jax.models import layers

    default_min_channels = layers.WGRAD_MIN_CHANNELS
    torch.set_num_threads(os.cpu_count() or 1)
    backend = jax.default_backend()
    # PyTorch runs where JAX does: on the CPU, or on CUDA beside a JAX GPU run.
    torch_device = "cpu" if backend == "cpu" else "cuda" if backend == "gpu" and torch.cuda.is_available() else None
    results = []
    for case in args.cases or ["128x128x1", "256x256x1", "256x256x4"]:
        h, w, b = (int(v) for v in case.split("x"))
        for dtype, wgrad in [(d, g) for d in args.dtypes for g in args.wgrads]:
            # Set before the step is traced. "xla": no convolution takes a CPU kernel gradient of its own;
            # "gemm": the tap GEMMs where "auto" would take oneDNN's; "onednn": "auto" (it needs oneDNN).
            if wgrad == "onednn" and not onednn.available():
                raise SystemExit(f"--wgrads onednn: {onednn.status()[1]}")
            layers.WGRAD_MIN_CHANNELS = default_min_channels if wgrad != "xla" else 1 << 30
            layers.CPU_WGRAD = "gemm" if wgrad == "gemm" else "onednn"
            run_jax, compile_s = jax_runner(h, w, b, dtype)
            run_jax()  # warm-up
            with_torch = not args.no_torch and b == 1 and dtype == "float32" and torch_device is not None
            run_torch = torch_runner(h, w, torch_device) if with_torch else None
            if run_torch:
                # Warm-up, then one interleaved round untimed: the first JAX step after PyTorch's first
                # iteration maps its temporaries afresh (seconds of page faults, docs/performance.md).
                run_torch()
                run_jax()
                run_torch()
            jax_times, torch_times = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                run_jax()
                jax_times.append(time.perf_counter() - t)
                if run_torch:
                    t = time.perf_counter()
                    run_torch()
                    torch_times.append(time.perf_counter() - t)
            row = {"case": case, "height": h, "width": w, "batch": b, "dtype": dtype, "conv_wgrad": wgrad,
                   "onednn_available": onednn.available(),
                   "repeats": args.repeats,
                   "jax_compile_s": round(compile_s, 2)}
            jax_s = statistics.median(jax_times)
            row.update(jax_step_s=round(jax_s, 3), jax_images_per_s=round(b / jax_s, 4))
            peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
            if peak is not None:  # the process's peak so far: cases run in the order given
                row["jax_peak_memory_gib"] = round(peak / 2**30, 2)
            if run_torch and torch_device == "cuda":
                row["torch_peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if torch_times:
                torch_s = statistics.median(torch_times)
                row.update(torch_step_s=round(torch_s, 3), torch_images_per_s=round(1 / torch_s, 4),
                           speedup=round(torch_s / (jax_s / b), 3))
            print(json.dumps(row), flush=True)
            results.append(row)

    report = {
        "what": "one official semi_cut training iteration (docs/reference.md §2.5) at the official widths; "
                "speedup = PyTorch s/image / JAX s/image (> 1: JAX faster)",
        "load_average_at_end": os.getloadavg(),
        "cpu_memory": memory,
        "results": results,
    }
    out = write_report(args.output or os.path.join(ROOT, "benchmarks", f"training_{backend}.json"), report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
