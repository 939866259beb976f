"""PyTorch-exact bilinear resizing (`F.interpolate(mode="bilinear", align_corners=False)`), NHWC.

`jax.image.resize` antialiases when it shrinks, torch does not. Two stages need torch's exact numbers:
Mask2Former shrinks its mask logits to the attention scales (docs/reference.md §5.2), and pytorch-fid
resizes every image to 299x299 before its Inception network (the `pytorch_fid` input protocol,
docs/reference.md §6.1). So the interpolation is written out: per axis, a `[out, in]` matrix built with
numpy from the static sizes (source coordinate `(i + 0.5) * in / out - 0.5`, clamped below at 0, two taps),
applied as matrix products, which is also the fastest form on CPU. `resize_bilinear` is the JAX form,
`resize_bilinear_host` the numpy one for host-side preprocessing; at equal sizes both return the input.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def interpolation_matrix(size_in: int, size_out: int, *, float32_coordinates: bool = False) -> np.ndarray:
    """`[size_out, size_in]` float32 weights of torch's 1-D linear interpolation (align_corners=False).

    By default the source coordinates and weights are computed in float64, then rounded. torch computes
    them in the input's dtype, which for float32 images moves weights by up to ~1.5e-5;
    `float32_coordinates=True` reproduces its float32 arithmetic bit for bit: `scale = float32(in) / out`,
    and `scale * (i + 0.5) - 0.5` rounded once to float32, as the fused multiply-add of torch's AVX2 CPU
    and CUDA kernels gives (checked against torch 2.13's CPU kernel).
    """
    if float32_coordinates:
        f32 = np.float32
        scale = np.float64(f32(size_in) / f32(size_out))
        src = (scale * (np.arange(size_out, dtype=np.float64) + 0.5) - 0.5).astype(f32)
        src = np.maximum(src, f32(0.0))  # torch clamps negative source coordinates to 0
        lo = np.minimum(src.astype(np.int64), size_in - 1)
        frac = np.clip(src - lo.astype(f32), f32(0.0), f32(1.0))
        weight_lo = f32(1.0) - frac
    else:
        scale = size_in / size_out
        src = (np.arange(size_out, dtype=np.float64) + 0.5) * scale - 0.5
        src = np.maximum(src, 0.0)  # torch clamps negative source coordinates to 0
        lo = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
        frac = src - lo
        weight_lo = 1.0 - frac
    hi = np.minimum(lo + 1, size_in - 1)
    matrix = np.zeros((size_out, size_in), np.float64)
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, lo), weight_lo)
    np.add.at(matrix, (rows, hi), frac)
    return matrix.astype(np.float32)


def resize_bilinear(x: jnp.ndarray, size: tuple[int, int], *, channels_last: bool = True) -> jnp.ndarray:
    """Resizes `[..., H, W, C]` (or `[..., H, W]` with `channels_last=False`) to `size = (H', W')`."""
    h_axis = -3 if channels_last else -2
    h, w = x.shape[h_axis], x.shape[h_axis + 1]
    out_h, out_w = size
    if (h, w) == (out_h, out_w):
        return x
    ry = jnp.asarray(interpolation_matrix(h, out_h), x.dtype)
    rx = jnp.asarray(interpolation_matrix(w, out_w), x.dtype)
    if channels_last:
        return jnp.einsum("yh,...hwc,xw->...yxc", ry, x, rx)
    return jnp.einsum("yh,...hw,xw->...yx", ry, x, rx)


def resize_bilinear_host(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """numpy `resize_bilinear`: `[..., H, W, C]` float32 to `[..., H', W', C]`, float32 matrix products.

    Per channel `Ry @ x @ Rx^T` (no antialias), with the weights torch computes for float32 images
    (`float32_coordinates=True`), so results match `F.interpolate` on float32 within a few ulps.
    """
    x = np.asarray(x, np.float32)
    h, w = x.shape[-3], x.shape[-2]
    out_h, out_w = size
    if (h, w) == (out_h, out_w):
        return x
    channels_first = np.moveaxis(x, -1, -3)  # [..., C, H, W]: batched BLAS matrix products
    ry = interpolation_matrix(h, out_h, float32_coordinates=True)
    rx = interpolation_matrix(w, out_w, float32_coordinates=True)
    out = ry @ channels_first @ rx.T
    return np.ascontiguousarray(np.moveaxis(out, -3, -1))
