"""Benchmark one semi-supervised training step (SPEC §2.5): JAX `train_step` vs the PyTorch reference.

    python tools/benchmark_train_step.py                 # 256x256, batch 1 -> benchmarks/train_step_cpu.json
    python tools/benchmark_train_step.py --size 128 --repeats 3

Same architecture as the official run (ngf = ndf = 64, nc = 256, 256 patches), He-scaled random
weights, one batch `{x, y, x_p, y_p}`. Reports the median step time after warm-up for both, the JAX
compile time separately, and `speedup` = PyTorch median / JAX median (> 1: JAX faster). Runs are
interleaved so background load affects both alike; both use the same number of threads.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--wgrad", default="auto", choices=["auto", "xla"],
                        help="conv kernel-gradient formulation: auto (GEMMs on CPU, layers.conv2d) or xla's own")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "train_step_cpu.json"))
    parser.add_argument("--note", action="append", default=[], help="free-text note stored in the JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={args.threads}")

    import jax
    import numpy as np
    import torch

    from scenimefy_jax.models import layers
    from scenimefy_jax.training import i2i_step as S

    if args.wgrad == "xla":  # every conv then takes XLA's own transpose rule for the kernel gradient
        layers.WGRAD_MIN_CHANNELS = 1 << 30
    from tests.torch_reference import cut_networks as ref
    from tests.torch_reference import cut_training as tref
    from tests.training.test_i2i_step import _convert

    torch.set_num_threads(args.threads)
    hp = S.I2IHParams(compute_dtype=args.dtype)
    nets = {
        "G": ref.randomize_(ref.ResnetGenerator(), seed=1, scale=0.5),
        "D": ref.randomize_(tref.NLayerDiscriminator(3), seed=2),
        "D_p": ref.randomize_(tref.NLayerDiscriminator(6), seed=3),
        "F": ref.randomize_(tref.PatchSampleF(), seed=4),
        "F_s": ref.randomize_(tref.PatchSampleF(), seed=5),
    }
    params = _convert(nets, hp)
    tx = S.make_optimizer(hp)
    state = S.TrainState(step=np.int32(0), params=params, opt_state={n: tx.init(params[n]) for n in S.NETWORKS})
    rng = np.random.default_rng(0)
    s = args.size
    batch = {k: rng.uniform(-1, 1, size=(1, s, s, 3)).astype(np.float32) for k in ("x", "y", "x_p", "y_p")}
    schedule = S.EpochSchedule.for_epoch(hp, 1)
    step = S.make_train_step(hp)

    t0 = time.perf_counter()
    compiled = step.lower(state, batch, jax.random.key(0), schedule).compile()
    compile_s = time.perf_counter() - t0

    ids = S.draw_patch_ids(jax.random.key(0), hp, (s, s), 1)
    t_ids = ([torch.from_numpy(np.asarray(i, np.int64)) for i in ids.unpaired],
             [torch.from_numpy(np.asarray(i, np.int64)) for i in ids.paired])
    opts = {n: torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999)) for n, m in nets.items()}
    t_batch = {k: ref.nchw(v) for k, v in batch.items()}

    def run_jax(i):
        nonlocal state
        t = time.perf_counter()
        state, metrics = compiled(state, batch, jax.random.key(i), schedule)
        jax.block_until_ready(metrics)
        return time.perf_counter() - t

    def run_torch():
        t = time.perf_counter()
        tref.training_iteration(nets, opts, t_batch, *t_ids, epoch=1)
        return time.perf_counter() - t

    run_jax(0), run_torch()  # warm-up
    jax_times, torch_times = [], []
    for i in range(args.repeats):
        jax_times.append(run_jax(i + 1))
        torch_times.append(run_torch())
    jax_med, torch_med = statistics.median(jax_times), statistics.median(torch_times)

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    result = {
        "benchmark": "one semi_cut training step (D, D_p, G+F+F_s with Adam), official architecture",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
                    "jax_devices": [str(d) for d in jax.devices()]},
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "torch": torch.__version__},
        "settings": {"image_size": s, "batch": 1, "threads": args.threads, "compute_dtype": args.dtype,
                     "repeats": args.repeats, "warmup": 1, "conv_wgrad": args.wgrad,
                     "xla_flags": os.environ.get("XLA_FLAGS", "")},
        "jax_compile_s": round(compile_s, 2),
        "jax_step_median_s": round(jax_med, 3),
        "torch_step_median_s": round(torch_med, 3),
        "jax_step_times_s": [round(t, 3) for t in jax_times],
        "torch_step_times_s": [round(t, 3) for t in torch_times],
        "speedup": round(torch_med / jax_med, 3),
        "notes": args.note,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
