"""Swin Transformer backbone of Mask2Former with detectron2 `D2SwinTransformer` semantics, NHWC.

`SwinBackbone(pixels)` equals transformers 5.x `SwinBackbone(pixel_values).feature_maps` as
`Mask2FormerForUniversalSegmentation` calls it (docs/reference.md §5.2): four maps at strides 4, 8, 16,
32 with `embed_dim * (1, 2, 4, 8)` channels, each the output of its stage *before* patch merging,
passed through that stage's own LayerNorm (`hidden_states_norms.stage1..4`). Defaults are Swin-B
(embed 128, depths 2-2-18-2, heads 4-8-16-32, window 12, MLP ratio 4, patch 4).

Per block (detectron2 semantics, which HF's `SwinBackbone` reproduces by passing `always_partition=True`):
`layernorm_before` -> zero-pad bottom/right to a multiple of the window -> cyclic shift by `window // 2`
on odd blocks -> window attention with relative position bias and the shift mask -> reverse shift ->
crop -> residual; `layernorm_after` -> MLP (exact GELU) -> residual. The window is never shrunk and the
shift never dropped, even when a stage is smaller than the window (at 256 px, stage 4 is 8x8 padded to
12x12 and still shifted by 6). The zero-padded tokens are not masked: they take part as keys (their keys
and values are the projection biases), exactly as in the reference.

Parameter names are the HF 5.x module names below `model.pixel_level_module.encoder.` (the rule in
`scenimefy_jax.convert.mask2former_keys`): `swin/embeddings/patch_embeddings/projection`,
`swin/embeddings/norm`, `swin/encoder/layers_<i>/blocks_<j>/{layernorm_before, attention/{q,k,v,o}_proj,
attention/relative_position_bias/relative_position_bias_table, layernorm_after, mlp/fc1, mlp/fc2}`,
`swin/encoder/layers_<i>/downsample/{norm, reduction}`, `hidden_states_norms/stage<k>`. HF's unused
`swin.layernorm` has no counterpart here.

Precision: parameters are float32; `dtype` is the dtype of the matmuls and convolutions (e.g.
`jnp.bfloat16`). LayerNorms, the residual stream, attention logits and softmax stay float32, so the
outputs are float32 either way.

Performance: all windows of all images go through one batched einsum; the relative position index
and the shift masks depend only on static shapes and are numpy constants built at trace time.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# transformers builds the embedding, patch-merging and per-stage output LayerNorms with torch's default
# eps (they do not read `config.layer_norm_eps`, which only the blocks use); detectron2 uses 1e-5 for all.
_TORCH_LAYER_NORM_EPS = 1e-5
# Value added to the logits of query/key pairs from different shift regions (reference: -100, not -inf).
_SHIFT_MASK_VALUE = -100.0


def relative_position_index(window_size: int) -> np.ndarray:
    """`[w*w, w*w]` index into the `((2w-1)^2, heads)` bias table, equal to the torch buffer.

    Token `i = (y_i, x_i)` in row-major window order attending to `j` reads row
    `(y_i - y_j + w - 1) * (2w - 1) + (x_i - x_j + w - 1)` of the table (Swin, eq. 4).
    """
    w = window_size
    y, x = np.divmod(np.arange(w * w), w)
    return (y[:, None] - y[None, :] + w - 1) * (2 * w - 1) + (x[:, None] - x[None, :] + w - 1)


def _partition_windows(x, window_size: int):
    """`[B, H, W, C]` (H, W multiples of the window) -> `[B, nW, w*w, C]`, windows in row-major order."""
    b, h, w_, c = x.shape
    w = window_size
    x = x.reshape(b, h // w, w, w_ // w, w, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // w) * (w_ // w), w * w, c)


def _merge_windows(windows, window_size: int, height: int, width: int):
    """Inverse of `_partition_windows`: `[B, nW, w*w, C]` -> `[B, H, W, C]`."""
    b, _, _, c = windows.shape
    w = window_size
    x = windows.reshape(b, height // w, width // w, w, w, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, height, width, c)


@functools.lru_cache(maxsize=64)
def shift_attention_mask(height: int, width: int, window_size: int, shift: int) -> np.ndarray:
    """`[nW, w*w, w*w]` float32 additive mask of shifted-window attention on a padded `height x width` map.

    Along each axis the (already rolled) map has three regions, `[0, n - w)`, `[n - w, n - s)` and
    `[n - s, n)`; tokens of a window attend only to tokens of the same 2-D region (0 there, -100 elsewhere).
    The regions are taken on the padded map, so zero-padded tokens are not masked (reference behaviour).
    """
    def regions(n):
        i = np.arange(n)
        return (i >= n - window_size).astype(np.int64) + (i >= n - shift)

    label = regions(height)[:, None] * 3 + regions(width)[None, :]
    windows = _partition_windows(label[None, :, :, None], window_size)[0, :, :, 0]  # [nW, w*w]
    different = windows[:, :, None] != windows[:, None, :]
    mask = np.where(different, _SHIFT_MASK_VALUE, 0.0).astype(np.float32)
    mask.setflags(write=False)  # cached: shared between calls
    return mask


def _layer_norm(eps: float, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=jnp.float32, name=name)


class RelativePositionBias(nn.Module):
    """The learned `((2w-1)^2, heads)` table, gathered into a `[heads, w*w, w*w]` logit bias."""

    window_size: int
    num_heads: int

    @nn.compact
    def __call__(self):
        w = self.window_size
        table = self.param(
            "relative_position_bias_table", nn.initializers.truncated_normal(0.02), ((2 * w - 1) ** 2, self.num_heads)
        )
        bias = table[relative_position_index(w).reshape(-1)]  # constant index: a static gather
        return bias.reshape(w * w, w * w, self.num_heads).transpose(2, 0, 1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window (HF `SwinAttention`; separate q/k/v/o projections)."""

    num_heads: int
    window_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, windows, mask=None):
        """`windows` `[B, nW, w*w, C]`, `mask` `[nW, w*w, w*w]` or None -> `[B, nW, w*w, C]`."""
        b, nw, n, c = windows.shape
        head_dim = c // self.num_heads
        dense = functools.partial(nn.Dense, c, dtype=self.dtype, kernel_init=nn.initializers.truncated_normal(0.02))
        split = lambda t: t.reshape(b, nw, n, self.num_heads, head_dim)  # noqa: E731
        # Scaling q before the product is the same as scaling the logits (the reference does the latter).
        q = split(dense(name="q_proj")(windows) * jnp.asarray(head_dim**-0.5, self.dtype))
        k = split(dense(name="k_proj")(windows))
        v = split(dense(name="v_proj")(windows))
        logits = jnp.einsum("bwqhd,bwkhd->bwhqk", q, k, preferred_element_type=jnp.float32)
        bias = RelativePositionBias(self.window_size, self.num_heads, name="relative_position_bias")()
        logits = logits + bias[None, None]
        if mask is not None:
            logits = logits + jnp.asarray(mask)[None, :, None]
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)  # softmax in float32, as the reference
        out = jnp.einsum("bwhqk,bwkhd->bwqhd", weights, v).reshape(b, nw, n, c)
        return dense(name="o_proj")(out)


class SwinMLP(nn.Module):
    """`fc1` -> exact GELU -> `fc2`."""

    hidden_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.truncated_normal(0.02)
        y = nn.Dense(self.hidden_dim, dtype=self.dtype, kernel_init=init, name="fc1")(x)
        y = jax.nn.gelu(y, approximate=False)
        return nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=init, name="fc2")(y)


class SwinBlock(nn.Module):
    """One (shifted-)window transformer block (HF `SwinLayer`, detectron2 `SwinTransformerBlock`)."""

    num_heads: int
    window_size: int
    shift: int
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        """`[B, H, W, C]` float32 -> same."""
        _, h, w, c = x.shape
        ws, s = self.window_size, self.shift
        y = _layer_norm(self.layer_norm_eps, "layernorm_before")(x)
        # docs/reference.md §5.2: pad after norm1 in every block, shift always (never shrink the window).
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        y = jnp.pad(y, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
        if s > 0:
            y = jnp.roll(y, (-s, -s), axis=(1, 2))
        mask = shift_attention_mask(hp, wp, ws, s) if s > 0 else None
        y = WindowAttention(self.num_heads, ws, dtype=self.dtype, name="attention")(_partition_windows(y, ws), mask)
        y = _merge_windows(y, ws, hp, wp)
        if s > 0:
            y = jnp.roll(y, (s, s), axis=(1, 2))
        x = x + y[:, :h, :w].astype(jnp.float32)
        y = _layer_norm(self.layer_norm_eps, "layernorm_after")(x)
        y = SwinMLP(int(self.mlp_ratio * c), dtype=self.dtype, name="mlp")(y)
        return x + y.astype(jnp.float32)


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat -> LayerNorm(4C) -> Linear(4C -> 2C, no bias); odd sizes padded with zeros."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        """`[B, H, W, C]` -> `[B, ceil(H/2), ceil(W/2), 2C]`."""
        b, h, w, c = x.shape
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        h2, w2 = (h + 1) // 2, (w + 1) // 2
        # torch concatenates x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]: column parity outer.
        x = x.reshape(b, h2, 2, w2, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(b, h2, w2, 4 * c)
        x = _layer_norm(_TORCH_LAYER_NORM_EPS, "norm")(x)
        init = nn.initializers.truncated_normal(0.02)
        x = nn.Dense(2 * c, use_bias=False, dtype=self.dtype, kernel_init=init, name="reduction")(x)
        return x.astype(jnp.float32)


class SwinStage(nn.Module):
    """`depth` blocks (odd ones shifted by `window // 2`), then patch merging unless it is the last stage."""

    depth: int
    num_heads: int
    window_size: int
    downsample: bool
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        """-> (stage output before merging `[B, H, W, C]`, input of the next stage or None)."""
        for j in range(self.depth):
            x = SwinBlock(self.num_heads, self.window_size, 0 if j % 2 == 0 else self.window_size // 2,
                          self.mlp_ratio, self.layer_norm_eps, self.dtype, name=f"blocks_{j}")(x)
        merged = PatchMerging(self.dtype, name="downsample")(x) if self.downsample else None
        return x, merged


class SwinEncoder(nn.Module):
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        outputs = []
        for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
            stage = SwinStage(depth, heads, self.window_size, i < len(self.depths) - 1, self.mlp_ratio,
                              self.layer_norm_eps, self.dtype, name=f"layers_{i}")
            out, x = stage(x)
            outputs.append(out)
        return tuple(outputs)


class PatchEmbeddings(nn.Module):
    """Non-overlapping `patch x patch` convolution; the input is zero-padded bottom/right to a multiple."""

    embed_dim: int
    patch_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pixels):
        _, h, w, _ = pixels.shape
        p = self.patch_size
        pixels = jnp.pad(pixels, ((0, 0), (0, -h % p), (0, -w % p), (0, 0)))
        conv = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="projection")
        return conv(pixels).astype(jnp.float32)


class SwinEmbeddings(nn.Module):
    embed_dim: int
    patch_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pixels):
        x = PatchEmbeddings(self.embed_dim, self.patch_size, self.dtype, name="patch_embeddings")(pixels)
        return _layer_norm(_TORCH_LAYER_NORM_EPS, "norm")(x)  # detectron2 PATCH_NORM=True


class SwinModel(nn.Module):
    """Embeddings + encoder (HF `SwinModel` without its unused final `layernorm` and pooler)."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    mlp_ratio: float
    patch_size: int
    layer_norm_eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pixels):
        x = SwinEmbeddings(self.embed_dim, self.patch_size, self.dtype, name="embeddings")(pixels)
        return SwinEncoder(self.depths, self.num_heads, self.window_size, self.mlp_ratio, self.layer_norm_eps,
                           self.dtype, name="encoder")(x)


class StageNorms(nn.Module):
    """One LayerNorm per stage output (HF `hidden_states_norms.stage<k>`, detectron2 `norm<k-1>`)."""

    @nn.compact
    def __call__(self, stages):
        return tuple(_layer_norm(_TORCH_LAYER_NORM_EPS, f"stage{k + 1}")(x) for k, x in enumerate(stages))


class SwinBackbone(nn.Module):
    """Mask2Former's Swin backbone (docs/reference.md §5.2); defaults are Swin-B, window 12."""

    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 4
    layer_norm_eps: float = 1e-5
    dtype: Any = jnp.float32  # computation dtype (params stay float32); bfloat16 option

    @nn.compact
    def __call__(self, pixel_values):
        """`[B, H, W, 3]` normalised pixels -> 4 float32 NHWC maps at strides 4, 8, 16, 32 (`ceil` sizes)."""
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} differ in length")
        stages = SwinModel(self.embed_dim, tuple(self.depths), tuple(self.num_heads), self.window_size,
                           self.mlp_ratio, self.patch_size, self.layer_norm_eps, self.dtype, name="swin")(pixel_values)
        return StageNorms(name="hidden_states_norms")(stages)
