"""StyleGAN2 generator throughput at 256 px: JAX (this port) vs the PyTorch reference, on this CPU.

    python tools/benchmark_stylegan2.py [--batches 1,8] [--repeats 3] [--out benchmarks/stylegan2_cpu.json]

Both run the official configuration (docs/reference.md §3.1: 256, channel_multiplier 2, 30,034,338
parameters) with the same random weights, fixed noise, truncation off. JAX times exclude compilation
(reported separately); each timing is the median of `repeats` calls after one warm-up. Also
compares the three modulated-conv implementations (`batched`, `grouped`, `vmap`) at one batch size.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from scenimefy_jax.convert import stylegan2 as conv  # noqa: E402
from scenimefy_jax.models import stylegan2 as sg  # noqa: E402
from tests.torch_reference import stylegan2 as ref  # noqa: E402
from tools.benchmark_report import write_report  # noqa: E402


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--impl_batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/stylegan2_cpu.json")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    torch.manual_seed(0)
    tg = ref.randomize_(ref.Generator(256, 512, 8), seed=0).eval()
    sd = {k: v.detach().numpy() for k, v in tg.state_dict().items()}
    results = {"jax": {}, "torch": {}, "jax_conv_impl": {}}

    def jax_runner(impl, batch):
        model = sg.Generator(conv_impl=impl)
        variables = jax.device_put(conv.convert_generator(sd, model, source="bench", name="g_ema"))
        fn = jax.jit(lambda v, z: model.apply(v, [z], randomize_noise=False))
        z = np.random.default_rng(0).standard_normal((batch, 512)).astype(np.float32)
        t0 = time.perf_counter()
        fn(variables, z).block_until_ready()
        compile_s = time.perf_counter() - t0
        fn(variables, z).block_until_ready()
        step = _median_time(lambda: fn(variables, z).block_until_ready(), args.repeats)
        return compile_s, step

    for b in batches:
        compile_s, step = jax_runner("batched", b)
        results["jax"][str(b)] = {"images_per_s": b / step, "s_per_batch": step, "compile_s": compile_s}
        z = torch.from_numpy(np.random.default_rng(0).standard_normal((b, 512)).astype(np.float32))
        with torch.no_grad():
            tg([z], randomize_noise=False)
            step_t = _median_time(lambda: tg([z], randomize_noise=False), args.repeats)
        results["torch"][str(b)] = {"images_per_s": b / step_t, "s_per_batch": step_t}
        print(f"batch {b}: jax {b / step:.2f} img/s (compile {compile_s:.1f}s), torch {b / step_t:.2f} img/s", flush=True)
    for impl in sg.CONV_IMPLS:
        compile_s, step = jax_runner(impl, args.impl_batch)
        results["jax_conv_impl"][impl] = {"batch": args.impl_batch, "images_per_s": args.impl_batch / step,
                                          "compile_s": compile_s}
        print(f"impl {impl} (batch {args.impl_batch}): {args.impl_batch / step:.2f} img/s", flush=True)

    record = {
        "benchmark": "StyleGAN2 generator forward, 256 px, channel_multiplier 2, fixed noise, float32",
        "settings": {"repeats": args.repeats, "torch_threads": torch.get_num_threads(),
                     "jax_conv_impl": "batched", "timing": "median after one warm-up; compile excluded"},
        "results": results,
    }
    print(f"wrote {write_report(args.out, record)}")


if __name__ == "__main__":
    main()
