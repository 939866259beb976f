"""The normalised sine position encoding of Mask2Former's pixel and transformer decoders (DETR style).

docs/reference.md §5.2: for an unpadded `H x W` map, row `y` and column `x` (1-based) are scaled to
`y / H * 2*pi` and `x / W * 2*pi` (with the official `+1e-6` in the denominators), divided by
`10000 ** (2 * floor(i / 2) / F)` for `i < F`, and turned into `sin` at even `i`, `cos` at odd `i`;
the `y` code comes first, then the `x` code: `2F` channels. It depends only on the static shape, so it
is computed once with numpy and enters the compiled program as a constant.
"""
from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=None)
def sine_position_encoding(height: int, width: int, num_features: int, temperature: float = 10000.0) -> np.ndarray:
    """`[H, W, 2 * num_features]` float32 encoding (channels: `y` features, then `x` features)."""
    eps, scale = 1e-6, 2 * np.pi
    y = np.arange(1, height + 1, dtype=np.float64) / (height + eps) * scale
    x = np.arange(1, width + 1, dtype=np.float64) / (width + eps) * scale
    i = np.arange(num_features)
    dim_t = temperature ** (2 * (i // 2) / num_features)

    def code(t):  # [N] -> [N, F]: sin on even feature indices, cos on odd ones
        angles = t[:, None] / dim_t
        return np.where(i % 2 == 0, np.sin(angles), np.cos(angles))

    cy = np.broadcast_to(code(y)[:, None, :], (height, width, num_features))
    cx = np.broadcast_to(code(x)[None, :, :], (height, width, num_features))
    return np.concatenate([cy, cx], axis=-1).astype(np.float32)
