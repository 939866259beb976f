"""Benchmark the FID Inception-v3 (pool3 features/s at 299x299): JAX (this port) vs the PyTorch reference.

    python tools/benchmark_inception.py                         # batch 1 8 16 32 -> benchmarks/inception_<backend>.json
    python tools/benchmark_inception.py --batch-sizes 1 16 --repeats 3
    python tools/benchmark_inception.py --output /tmp/inception.json

Both sides compute pool3 from the same random weights and BatchNorm statistics: the PyTorch model of
tests/torch_reference/fid_inception.py (written from docs/reference.md §6.1) is randomised, and its
state dict goes through the registry converter into `FIDInceptionV3`. JAX times the jitted
`apply` (float32, inputs already on the device); PyTorch times `model(x)` under `no_grad` in eval mode
with `os.cpu_count()` threads. Each batch size: one compile (timed separately), warm-up calls, then
`repeats` timed rounds alternating JAX and PyTorch (background load hits both alike); the median is
reported, with features/s = batch / median and `speedup` = PyTorch / JAX, and beside it the fastest
round of each (`*_min_ms`, `speedup_min`): on a shared machine PyTorch's OpenMP threads stall badly
whenever another process takes a core (rounds 10x slower than the rest were seen), XLA's thread
pool much less, so the minimum is the fairer view of uncontended speed. The largest |difference| of
the two pool3 outputs is recorded for every case; the load average before and after the run goes
into the JSON.
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

from tools.benchmark_report import parse_batch_sizes, write_report  # noqa: E402

AGREEMENT = 1e-4  # max |JAX - PyTorch| of pool3 must be below this fraction of max |pool3|
WARMUP = 2


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return []


def run_case(batch: int, size: int, repeats: int, params, torch_model) -> dict:
    import jax
    import torch

    from scenimefy_jax.models.inception import FIDInceptionV3

    images = np.random.default_rng(batch).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    net = FIDInceptionV3()
    x = jax.device_put(images)
    start = time.perf_counter()
    compiled = jax.jit(lambda p, x: net.apply({"params": p}, x)).lower(params, x).compile()
    compile_s = time.perf_counter() - start
    tx = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def run_jax():
        return compiled(params, x).block_until_ready()

    def run_torch():
        with torch.no_grad():
            return torch_model(tx)

    got, want = np.asarray(run_jax()), run_torch().numpy()
    for _ in range(WARMUP - 1):
        run_jax(), run_torch()
    jax_times, torch_times = [], []
    for _ in range(repeats):  # interleaved
        jax_times.append(_timed(run_jax))
        torch_times.append(_timed(run_torch))
    jax_s, torch_s = statistics.median(jax_times), statistics.median(torch_times)
    jax_min, torch_min = min(jax_times), min(torch_times)
    diff = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    return {
        "case": f"{size}x{size}x{batch}", "batch": batch, "size": size, "dtype": "float32", "repeats": repeats,
        "jax_compile_s": round(compile_s, 2),
        "jax_median_ms": round(jax_s * 1e3, 1), "jax_times_ms": [round(t * 1e3, 1) for t in jax_times],
        "jax_features_per_s": round(batch / jax_s, 2),
        "torch_median_ms": round(torch_s * 1e3, 1), "torch_times_ms": [round(t * 1e3, 1) for t in torch_times],
        "torch_features_per_s": round(batch / torch_s, 2),
        "speedup": round(torch_s / jax_s, 3),
        "jax_min_ms": round(jax_min * 1e3, 1), "torch_min_ms": round(torch_min * 1e3, 1),
        "speedup_min": round(torch_min / jax_min, 3),
        "max_abs_diff_pool3": diff, "max_abs_pool3": round(scale, 4), "agrees": diff <= AGREEMENT * scale,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", nargs="+", default=["1", "8", "16", "32"],
                        help="batch sizes, e.g. '1 8 16' or '1,8,16' (default: 1 8 16 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per case and framework (default: 5)")
    parser.add_argument("--size", type=int, default=299, help="square input side (default: 299, the FID input)")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="PyTorch intra-op threads (default: os.cpu_count())")
    parser.add_argument("--output", "--out", dest="output", default="",
                        help="JSON path (default: benchmarks/inception_<backend>.json)")
    args = parser.parse_args(argv)
    batch_sizes = parse_batch_sizes(args.batch_sizes)

    import jax
    import torch

    from scenimefy_jax.convert import inception as convert_inception
    from tests.torch_reference import fid_inception as tref

    torch.set_num_threads(args.torch_threads or os.cpu_count() or 1)
    backend = jax.default_backend()
    load_before = _load()
    torch_model = tref.randomize_(tref.FIDInceptionV3(), seed=0)
    converted = convert_inception.convert_state_dict(
        {k: v.numpy() for k, v in torch_model.state_dict().items()}, "<random FID Inception>")
    params = jax.device_put(converted.params)
    print(f"random FID Inception-v3 built and converted; load average {load_before}", flush=True)

    results = []
    for batch in batch_sizes:
        r = run_case(batch, args.size, args.repeats, params, torch_model)
        print(json.dumps(r), flush=True)
        results.append(r)

    best_jax = max(results, key=lambda r: r["jax_features_per_s"])
    best_torch = max(results, key=lambda r: r["torch_features_per_s"])
    summary = {
        **{f"speedup_batch{r['batch']}": r["speedup"] for r in results},
        **{f"speedup_min_batch{r['batch']}": r["speedup_min"] for r in results},
        "best_jax_features_per_s": best_jax["jax_features_per_s"], "best_jax_batch": best_jax["batch"],
        "best_torch_features_per_s": best_torch["torch_features_per_s"], "best_torch_batch": best_torch["batch"],
        "max_abs_diff_pool3": max(r["max_abs_diff_pool3"] for r in results),
        "all_agree": all(r["agrees"] for r in results),
    }
    report = {
        "benchmark": "fid_inception_pool3",
        "settings": {
            "model": "pytorch-fid FIDInceptionV3 (random weights and BatchNorm statistics, 23.85 M parameters)",
            "input": f"{args.size}x{args.size}, uniform in [-1, 1] (the network input; no resizing timed)",
            "jax": "FIDInceptionV3.apply, jitted, float32, inputs on the device",
            "torch": "tests/torch_reference/fid_inception.py, eval mode, no_grad, float32",
            "torch_threads": torch.get_num_threads(),
            "timing": f"{WARMUP} warm-up calls, then median of interleaved rounds; compile time separate",
            "speedup": "torch_median_ms / jax_median_ms (speedup_min: torch_min_ms / jax_min_ms)",
            "agreement": f"max |jax - torch| of pool3 <= {AGREEMENT} * max |pool3|",
            "load_note": "1/5/15-min load averages (as uptime prints them) of the whole machine, which other "
                         "developers' jobs share; above ~1 per core PyTorch's rounds slow down most",
            "load_average_before": load_before,
            "load_average_after": _load(),
        },
        "results": results,
        "summary": summary,
    }
    out = write_report(args.output or os.path.join(ROOT, "benchmarks", f"inception_{backend}.json"), report)
    print(f"wrote {out}: {json.dumps(summary)}")
    return 0 if summary["all_agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
