"""Multi-scale deformable attention (Deformable DETR), as Mask2Former's pixel decoder uses it.

`ms_deform_attn_sample` is the sampling core: per level, bilinear `grid_sample(value_l, 2 * loc - 1,
padding_mode="zeros", align_corners=False)` (pixel coordinate `loc * size - 0.5`, corners outside the map
contribute zero; docs/reference.md §5.3), weighted by the attention weights and summed over levels and points.
`MSDeformAttn` is the attention module around it (transformers'
`Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention`, parameters `sampling_offsets`,
`attention_weights`, `value_proj`, `output_proj`; docs/reference.md §5.2).

How the sampling is computed (one gather, no loop over queries or points):

1. Every level of `value` gets a two-pixel zero border, and each padded position `(y, x)` stores its 2x2
   block `(y, x), (y, x + 1), (y + 1, x), (y + 1, x + 1)` side by side: a "quad table" `[..., 4 * head_dim]`.
   The levels are concatenated. This is the only Python loop, a static one over the (three) levels, and
   it touches only `value`, 4x its size.
2. Pixel coordinates are clipped to `[-1.5, size + 0.5]`, which changes nothing (beyond -1 or size both
   corners are outside the map: zero value and zero gradient, as in torch) but keeps the top-left corner
   in `[-2, size]`, i.e. inside the border. An out-of-range corner therefore reads an exact zero from the
   border, never a clipped neighbour or uninitialised memory, so a NaN/Inf elsewhere in `value` cannot
   leak in through a zero weight.
3. ONE gather over all batch items, queries, heads, levels and points reads the quads, and one
   multiply-and-sum applies bilinear x attention weights.

Why a quad table: on XLA:CPU a gather is materialised and its cost is per gathered slice; gathering one
contiguous `4 * head_dim` slice per point instead of four `head_dim` slices (or one gather per level)
halved the sampling time at the Swin-B sizes. On GPU the gather fuses into the reduction either way.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SpatialShapes = Sequence[tuple[int, int]]


def ms_deform_attn_sample(
    value: jax.Array,
    spatial_shapes: SpatialShapes,
    sampling_locations: jax.Array,
    attention_weights: jax.Array,
) -> jax.Array:
    """Bilinear multi-scale deformable sampling, summed with attention weights.

    Args:
      value: `[B, S, heads, head_dim]` with `S = sum(H_l * W_l)`, the levels flattened row-major one after
        another in the order of `spatial_shapes`.
      spatial_shapes: static `((H_0, W_0), (H_1, W_1), ...)` (Python ints).
      sampling_locations: `[B, Q, heads, levels, points, 2]`, normalised `(x, y)` with `(0, 0)` the top-left
        corner of the map and `(1, 1)` the bottom-right one; values outside `[0, 1]` are allowed.
      attention_weights: `[B, Q, heads, levels, points]`.

    Returns:
      `[B, Q, heads * head_dim]` (head-major channels), in `value.dtype`; the interpolation weights and the
      accumulation are in the locations' dtype, at least float32.
    """
    batch, seq_len, heads, head_dim = value.shape
    shapes = tuple((int(h), int(w)) for h, w in spatial_shapes)
    if sum(h * w for h, w in shapes) != seq_len:
        raise ValueError(f"spatial_shapes {shapes} do not add up to the sequence length {seq_len}")
    n_levels = sampling_locations.shape[3]
    if n_levels != len(shapes) or sampling_locations.shape[-1] != 2:
        raise ValueError(f"sampling_locations {sampling_locations.shape} do not match {len(shapes)} levels")

    # Quad table: zero border of 2, entry (y, x) = the 2x2 block below-right of it.
    quads, start = [], 0
    for h, w in shapes:
        level = value[:, start : start + h * w].reshape(batch, h, w, heads, head_dim)
        level = jnp.pad(level, ((0, 0), (2, 2), (2, 2), (0, 0), (0, 0)))
        quad = jnp.concatenate(
            [level[:, :-1, :-1], level[:, :-1, 1:], level[:, 1:, :-1], level[:, 1:, 1:]], axis=-1
        )  # [B, h + 3, w + 3, heads, 4 * head_dim]
        quads.append(quad.reshape(batch, (h + 3) * (w + 3), heads, 4 * head_dim))
        start += h * w
    table_len = sum((h + 3) * (w + 3) for h, w in shapes)
    table = jnp.concatenate(quads, axis=1).reshape(batch * table_len * heads, 4 * head_dim)

    # Per-level constants, [levels, 1] against [B, Q, heads, levels, points].
    heights = np.array([h for h, _ in shapes], np.float32)[:, None]
    widths = np.array([w for _, w in shapes], np.float32)[:, None]
    row_len = np.array([w + 3 for _, w in shapes], np.int32)[:, None]
    level_start = np.cumsum([0] + [(h + 3) * (w + 3) for h, w in shapes])[:-1].astype(np.int32)[:, None]

    acc = jnp.promote_types(sampling_locations.dtype, jnp.float32)
    loc = sampling_locations.astype(acc)
    # grid_sample(align_corners=False) pixel coordinates, clipped where both corners are outside anyway.
    x = jnp.clip(loc[..., 0] * widths - 0.5, -1.5, widths + 0.5)
    y = jnp.clip(loc[..., 1] * heights - 0.5, -1.5, heights + 0.5)
    x0, y0 = jnp.floor(x), jnp.floor(y)
    fx, fy = x - x0, y - y0
    pos = level_start + (y0.astype(jnp.int32) + 2) * row_len + (x0.astype(jnp.int32) + 2)

    b_idx = jnp.arange(batch, dtype=jnp.int32)[:, None, None, None, None]
    h_idx = jnp.arange(heads, dtype=jnp.int32)[None, None, :, None, None]
    sampled = jnp.take(table, (b_idx * table_len + pos) * heads + h_idx, axis=0, mode="clip")
    sampled = sampled.reshape(*pos.shape, 4, head_dim)  # [B, Q, heads, levels, points, corner, head_dim]
    weights = jnp.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=-1)
    weights = weights * attention_weights.astype(acc)[..., None]
    out = jnp.sum(sampled * weights[..., None], axis=(3, 4, 5))
    num_queries = sampling_locations.shape[1]
    return out.reshape(batch, num_queries, heads * head_dim).astype(value.dtype)


def _sampling_offsets_bias_init(num_heads: int, n_levels: int, n_points: int):
    """Deformable DETR's offset bias: head h points along angle 2*pi*h/heads, point p at distance p + 1."""

    def init(key, shape, dtype=jnp.float32):
        del key
        thetas = np.arange(num_heads) * (2.0 * math.pi / num_heads)
        grid = np.stack([np.cos(thetas), np.sin(thetas)], -1)
        grid = grid / np.abs(grid).max(-1, keepdims=True)
        grid = grid[:, None, None, :] * np.arange(1, n_points + 1)[None, None, :, None]
        grid = np.broadcast_to(grid, (num_heads, n_levels, n_points, 2))
        return jnp.asarray(grid.reshape(shape), dtype)

    return init


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: `[B, Q, C]` queries sample `[B, S, C]` values at learned offsets.

    Parameter names are transformers' (`sampling_offsets`, `attention_weights`, `value_proj`,
    `output_proj`); the initialisers reproduce its `_init_weights` (zero offset kernel with the angular bias
    grid, zero attention logits, Xavier-uniform projections with zero bias).
    """

    embed_dim: int = 256
    num_heads: int = 8
    n_levels: int = 3
    n_points: int = 4
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        query: jax.Array,
        value: jax.Array,
        reference_points: jax.Array,
        spatial_shapes: SpatialShapes,
    ) -> jax.Array:
        """
        Args:
          query: `[B, Q, C]`, position embedding already added (it predicts offsets and weights).
          value: `[B, S, C]` flattened levels in the order of `spatial_shapes` (no position embedding).
          reference_points: `[B or 1, Q, levels, 2]` normalised `(x, y)` in `[0, 1]`.
          spatial_shapes: static `((H_l, W_l), ...)`.

        Returns:
          `[B, Q, C]`.
        """
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        batch, num_queries, _ = query.shape
        heads, levels, points = self.num_heads, self.n_levels, self.n_points
        acc = jnp.promote_types(self.dtype, jnp.float32)  # offsets, locations, softmax: at least float32
        dense = lambda n, name, **kw: nn.Dense(n, dtype=self.dtype, name=name, **kw)  # noqa: E731

        value = dense(self.embed_dim, "value_proj", kernel_init=nn.initializers.xavier_uniform())(value)
        value = value.reshape(batch, value.shape[1], heads, self.embed_dim // heads)
        offsets = dense(
            heads * levels * points * 2,
            "sampling_offsets",
            kernel_init=nn.initializers.zeros,
            bias_init=_sampling_offsets_bias_init(heads, levels, points),
        )(query)
        offsets = offsets.astype(acc).reshape(batch, num_queries, heads, levels, points, 2)
        logits = dense(heads * levels * points, "attention_weights", kernel_init=nn.initializers.zeros)(query)
        weights = jax.nn.softmax(logits.astype(acc).reshape(batch, num_queries, heads, levels * points))
        weights = weights.reshape(batch, num_queries, heads, levels, points)

        # Offsets are in pixels of each level: normalise by (W_l, H_l).
        normaliser = jnp.asarray([[w, h] for h, w in spatial_shapes], acc)
        locations = (
            reference_points.astype(acc)[:, :, None, :, None, :]
            + offsets / normaliser[None, None, None, :, None, :]
        )
        out = ms_deform_attn_sample(value, spatial_shapes, locations, weights)
        return dense(self.embed_dim, "output_proj", kernel_init=nn.initializers.xavier_uniform())(out)


__all__ = ["MSDeformAttn", "ms_deform_attn_sample"]
