"""upfirdn2d in pure JAX: upsample (zero insertion), pad (negative = crop), FIR filter, downsample.

Reproduces rosinality's `upfirdn2d` (docs/reference.md §3.1) on NHWC arrays. Per spatial axis:

    1. insert `up - 1` zeros after every sample          (length n * up)
    2. pad `p0` before and `p1` after (negative crops)    (length n * up + p0 + p1)
    3. true convolution with the kernel (= correlation with the flipped kernel), VALID
    4. keep every `down`-th sample starting at 0

    output length = (n * up + p0 + p1 - k + down) // down

The same pad pair applies to both axes, as in the StyleGAN2 layers. The kernels used by StyleGAN2 are
outer products of a 1-D kernel ([1, 3, 3, 1]), so the filter is applied separably as a sum of `k`
strided slices per axis: no convolution primitive, no depthwise-conv weights, and an exact match of
the reference arithmetic up to float32 summation order. A general (non-separable) 2-D kernel falls back
to a depthwise convolution.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def make_kernel(taps: Sequence[float]) -> np.ndarray:
    """rosinality `make_kernel`: 1-D taps -> outer product normalised to sum 1, shape `[k, k]`."""
    k = np.asarray(taps, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    return (k / k.sum()).astype(np.float32)


def separable_taps(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(`ky`, `kx`) with `kernel == outer(ky, kx)`, or None when the 2-D kernel is not rank one."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim == 1:
        return kernel, kernel
    u, s, vt = np.linalg.svd(kernel)
    ky = u[:, 0] * np.sqrt(s[0])
    kx = vt[0] * np.sqrt(s[0])
    if np.sign(ky.sum()) < 0:  # keep both factors positive for positive kernels (cosmetic)
        ky, kx = -ky, -kx
    if not np.allclose(np.outer(ky, kx), kernel, rtol=0, atol=1e-7 * max(1.0, np.abs(kernel).max())):
        return None
    return ky, kx


def _upfirdn_axis(x: jax.Array, taps: np.ndarray, up: int, down: int, pad: tuple[int, int], axis: int) -> jax.Array:
    n = x.shape[axis]
    k = len(taps)
    p0, p1 = pad
    length = n * up + p0 + p1
    out = (length - k + down) // down
    if out <= 0:
        raise ValueError(f"upfirdn2d: empty output (axis length {n}, up {up}, down {down}, pad {pad}, kernel {k})")
    # Zero insertion and padding in one lax.pad: interior pads `up - 1` zeros between samples, the
    # trailing `up - 1` zeros go into the high pad; negative low/high pads crop.
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (p0, p1 + up - 1, up - 1)
    xp = jax.lax.pad(x, jnp.zeros((), x.dtype), config)
    flipped = np.asarray(taps, dtype=np.float64)[::-1]  # true convolution
    acc = None
    for j, tap in enumerate(flipped):
        if tap == 0:
            continue
        term = jax.lax.slice_in_dim(xp, j, j + (out - 1) * down + 1, stride=down, axis=axis) * jnp.asarray(
            tap, x.dtype
        )
        acc = term if acc is None else acc + term
    if acc is None:
        shape = list(x.shape)
        shape[axis] = out
        acc = jnp.zeros(shape, x.dtype)
    return acc


def upfirdn2d(
    x: jax.Array,
    kernel: np.ndarray,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
) -> jax.Array:
    """rosinality `upfirdn2d(input, kernel, up, down, pad)` on `x: [B, H, W, C]`.

    `kernel` is a fixed (numpy) `[k, k]` filter or 1-D taps (meaning their outer product); it is applied
    as a true convolution (flipped). Returns `[B, H', W', C]` with the lengths given in the module doc.
    """
    kernel = np.asarray(kernel)
    factors = separable_taps(kernel)
    if factors is not None:
        ky, kx = factors
        x = _upfirdn_axis(x, ky, up, down, pad, axis=1)
        return _upfirdn_axis(x, kx, up, down, pad, axis=2)
    # General 2-D kernel: pad/upsample both axes, then a depthwise VALID correlation with the flipped
    # kernel and stride `down`.
    c = x.shape[-1]
    p0, p1 = pad
    config = [(0, 0, 0), (p0, p1 + up - 1, up - 1), (p0, p1 + up - 1, up - 1), (0, 0, 0)]
    xp = jax.lax.pad(x, jnp.zeros((), x.dtype), config)
    w = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    w = jnp.asarray(np.tile(w[:, :, None, None], (1, 1, 1, c)), x.dtype)
    return jax.lax.conv_general_dilated(
        xp, w, (down, down), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c
    )
