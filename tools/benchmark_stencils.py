"""Benchmark the generator's resampling stencils and reflection padding, backward pass included.

    python tools/benchmark_stencils.py             # -> benchmarks/stencils_<backend>.json

`scenimefy_jax.models.layers` gives the blur downsampling, the blur upsampling and the reflection padding
hand-written VJPs (docs/performance.md). For each at the shapes of the translation step at 128x128 (batch
3: x, y and x_p through G at once), this times, interleaved in one run: the forward; the VJP of the
hand-written rule ("custom"); the VJP XLA derives from the same forward without the rule ("derived": the
pre-rule formulation); and the PyTorch forward + backward of the official modules
(`tests/torch_reference/cut_networks.Downsample` / `Upsample`, `F.pad(mode="reflect")`). Medians of
`--repeats` calls, ms.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.benchmark_report import interleaved_median_ms, write_report  # noqa: E402

CASES = [  # (op, NHWC shape): the shapes of the 128x128 translation step, batch 3
    ("blur_downsample", (3, 128, 128, 128)), ("blur_downsample", (3, 64, 64, 256)),
    ("blur_upsample", (3, 32, 32, 256)), ("blur_upsample", (3, 64, 64, 128)),
    ("reflect_pad_1", (3, 32, 32, 256)), ("reflect_pad_3", (3, 128, 128, 64)),
]


def _derived(op):
    """The same forward without the hand-written VJPs: XLA's transposes (what the step used before)."""
    import jax.numpy as jnp

    from scenimefy_jax.models import layers

    def reflect(x, p, axis):
        widths = [(0, 0)] * x.ndim
        widths[axis] = (p, p)
        return jnp.pad(x, widths, mode="reflect")

    def down_axis(x, axis):  # the forward of layers._blur_down_axis, reflection by jnp.pad
        import jax

        n = x.shape[axis]
        m = (n + 1) // 2
        take = functools.partial(jax.lax.slice_in_dim, reflect(x, 1, axis), stride=2, axis=axis)
        return (take(0, 2 * m - 1) + 2 * take(1, 2 * m) + take(2, 2 * m + 1)) * 0.25

    up_axis = layers._blur_up_axis.fun  # the undecorated forward
    if op == "blur_downsample":
        return lambda x: down_axis(down_axis(x, 1), 2)
    if op == "blur_upsample":
        return lambda x: up_axis(up_axis(x, 1), 2)
    p = int(op.rsplit("_", 1)[1])
    return lambda x: reflect(reflect(x, p, 1), p, 2)


def _custom(op):
    from scenimefy_jax.models import layers

    if op.startswith("reflect_pad"):
        p = int(op.rsplit("_", 1)[1])
        return lambda x: layers.reflect_pad(x, p)
    return getattr(layers, op)


def _torch(op, channels):
    import torch.nn.functional as F

    from tests.torch_reference import cut_networks as ref

    if op == "blur_downsample":
        return ref.Downsample(channels)
    if op == "blur_upsample":
        return ref.Upsample(channels)
    p = int(op.rsplit("_", 1)[1])
    return lambda x: F.pad(x, (p, p, p, p), mode="reflect")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--output", default="", help="JSON path (default: benchmarks/stencils_<backend>.json)")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    rows = []
    for op, shape in CASES:
        x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
        fwd = jax.jit(_custom(op))
        g = jnp.asarray(rng.normal(size=fwd(x).shape).astype(np.float32))
        vjps = {name: jax.jit(lambda x, g, f=f: jax.vjp(f, x)[1](g)[0])
                for name, f in (("custom", _custom(op)), ("derived", _derived(op)))}
        got = {name: np.asarray(v(x, g)) for name, v in vjps.items()}
        module = _torch(op, shape[-1])
        xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).requires_grad_(True)
        gt = torch.from_numpy(np.asarray(g).transpose(0, 3, 1, 2).copy())

        def torch_step():
            xt.grad = None
            module(xt).backward(gt)

        torch_step()
        torch_grad = xt.grad.numpy().transpose(0, 2, 3, 1)
        jax.block_until_ready(fwd(x))
        timings = interleaved_median_ms({
            "jax_forward": lambda: jax.block_until_ready(fwd(x)),
            **{f"jax_vjp_{name}": (lambda v=v: jax.block_until_ready(v(x, g))) for name, v in vjps.items()},
            "torch_forward_backward": torch_step,
        }, args.repeats)
        row = {"op": op, "shape_nhwc": list(shape), **{k: round(v, 2) for k, v in timings.items()},
               "max_abs_diff_custom_vs_derived": float(np.abs(got["custom"] - got["derived"]).max()),
               "max_abs_diff_custom_vs_torch": float(np.abs(got["custom"] - torch_grad).max())}
        print(json.dumps(row), flush=True)
        rows.append(row)
    report = {"what": "resampling stencils and reflection padding of the generator: forward, and the input "
                      "gradient by the hand-written VJP, by XLA's derived transpose, and by PyTorch "
                      "(forward + backward of the official modules); medians in ms",
              "repeats": args.repeats, "load_average_at_end": os.getloadavg(), "results": rows}
    out = write_report(args.output or os.path.join(ROOT, "benchmarks", f"stencils_{jax.default_backend()}.json"), report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
