"""PyTorch-exact bilinear resizing (`F.interpolate(mode="bilinear", align_corners=False)`), NHWC.

`jax.image.resize` antialiases when it shrinks, torch does not; Mask2Former shrinks its mask logits to
the attention scales (docs/reference.md §5.2), so the interpolation is written out: per axis, a
`[out, in]` matrix built with numpy from the static sizes (source coordinate `(i + 0.5) * in / out - 0.5`,
clamped below at 0, two taps), applied as matrix products, which is also the fastest form on CPU.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def interpolation_matrix(size_in: int, size_out: int) -> np.ndarray:
    """`[size_out, size_in]` float32 weights of torch's 1-D linear interpolation (align_corners=False)."""
    scale = size_in / size_out
    src = (np.arange(size_out, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.maximum(src, 0.0)  # torch clamps negative source coordinates to 0
    lo = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = src - lo
    matrix = np.zeros((size_out, size_in), np.float64)
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, lo), 1.0 - frac)
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
