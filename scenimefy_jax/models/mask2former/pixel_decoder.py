"""Mask2Former's multi-scale deformable-attention pixel decoder in Flax, NHWC (docs/reference.md §5.2).

`MSDeformAttnPixelDecoder(features)` takes the four backbone maps `(res2, res3, res4, res5)` at strides
4, 8, 16, 32 and returns `(mask_features, multi_scale_features)`, the two things transformers'
`Mask2FormerPixelDecoder` hands on:

* `multi_scale_features`: the deformable encoder's output split back into its three levels, `[B, H/32,
  W/32, C]`, `[B, H/16, W/16, C]`, `[B, H/8, W/8, C]` in that order (the order the transformer decoder's
  cross-attention cycles through), with no further processing;
* `mask_features [B, H/4, W/4, mask_dim]`: the FPN stage on res2 (lateral 1x1 conv + GroupNorm, plus the
  bilinearly upsampled stride-8 encoder output, then 3x3 conv + GroupNorm + ReLU), through the 1x1
  `mask_projection`.

The encoder: per-level 1x1 conv + GroupNorm(32) input projections (res5, res4, res3, in that order),
normalised sine position encoding plus a learned `level_embed`, reference points at the pixel centres of
every level (the batch is unpadded, so every valid ratio is 1 and the reference points are the same for all
levels), `encoder_layers` post-norm layers of deformable self-attention + ReLU FFN.

Numerics follow torch: GroupNorm and LayerNorm eps 1e-5 with two-pass variance (Flax defaults to eps 1e-6
and a one-pass variance); the position encoding (`position_encoding.sine_position_encoding`, 128 features
per axis) and the FPN's bilinear upsampling (`resize.resize_bilinear`, torch's `align_corners=False`) are
the helpers the transformer decoder shares. With `dtype=jnp.bfloat16`, convolutions, dense layers and
residuals run in bfloat16 while parameters stay float32, and normalisation statistics, softmax, sampling
locations and bilinear sampling weights are float32; outputs are then bfloat16. `dtype=jnp.float64` (under
`jax_enable_x64`) computes in float64 apart from those helpers' float32 constants; the tests use it to show
that the float32 parity residue is rounding.

Parameter names are transformers 5.x's below `model.pixel_level_module.decoder.` (docs/reference.md §5.3,
`scenimefy_jax.convert.mask2former_keys`): `input_projections_<i>/{0: conv, 1: norm}`, `level_embed`
`[levels, C]`, `encoder/layers_<k>/{self_attn/{sampling_offsets, attention_weights, value_proj,
output_proj}, self_attn_layer_norm, fc1, fc2, final_layer_norm}`, `mask_projection`, `adapter_1/{0, 1}`,
`layer_1/{0, 1}`.

Parity (tests/models/mask2former/test_pixel_decoder.py, float32, random weights): both outputs agree with
transformers' decoder to `atol = 1e-4 * max|reference|` (measured: <= 7.4e-7 at a small config,
<= 1.4e-5 at the Swin-B/ADE sizes for 256x256 and 256x320 inputs).
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from scenimefy_jax.models.mask2former.deformable_attention import MSDeformAttn, SpatialShapes
from scenimefy_jax.models.mask2former.position_encoding import sine_position_encoding
from scenimefy_jax.models.resize import resize_bilinear

TORCH_NORM_EPS = 1e-5  # nn.GroupNorm / nn.LayerNorm default; Flax's default is 1e-6


def encoder_reference_points(spatial_shapes: SpatialShapes, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Pixel centres `((j + 0.5) / W_l, (i + 0.5) / H_l)` of every level, flattened: `[S, 2]` as `(x, y)`."""
    points = []
    for h, w in spatial_shapes:
        ys, xs = jnp.meshgrid(
            (jnp.arange(h, dtype=dtype) + 0.5) / h, (jnp.arange(w, dtype=dtype) + 0.5) / w, indexing="ij"
        )
        points.append(jnp.stack([xs.reshape(-1), ys.reshape(-1)], axis=-1))
    return jnp.concatenate(points, axis=0)


def _group_norm(name: str, dtype) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, epsilon=TORCH_NORM_EPS, use_fast_variance=False, dtype=dtype, name=name)


def _layer_norm(name: str, dtype) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=TORCH_NORM_EPS, use_fast_variance=False, dtype=dtype, name=name)


class ConvGroupNorm(nn.Module):
    """torch `nn.Sequential(Conv2d, GroupNorm(32)[, ReLU])`: children named `"0"` (conv), `"1"` (norm)."""

    features: int
    kernel_size: int = 1
    use_bias: bool = True
    relu: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, p = self.kernel_size, self.kernel_size // 2
        x = nn.Conv(self.features, (k, k), padding=((p, p), (p, p)), use_bias=self.use_bias, dtype=self.dtype,
                    name="0")(x)
        x = _group_norm("1", self.dtype)(x)
        return nn.relu(x) if self.relu else x


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention, add & LayerNorm, ReLU FFN, add & LayerNorm."""

    feature_size: int = 256
    feedforward_dim: int = 1024
    num_heads: int = 8
    n_levels: int = 3
    n_points: int = 4
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden, position_embeddings, reference_points, spatial_shapes: SpatialShapes):
        """`hidden`, `position_embeddings`: `[B, S, C]`; `reference_points` `[1, S, levels, 2]`."""
        attn = MSDeformAttn(self.feature_size, self.num_heads, self.n_levels, self.n_points, self.dtype,
                            name="self_attn")
        hidden = hidden + attn(hidden + position_embeddings, hidden, reference_points, spatial_shapes)
        hidden = _layer_norm("self_attn_layer_norm", self.dtype)(hidden)
        ffn = nn.relu(nn.Dense(self.feedforward_dim, dtype=self.dtype, name="fc1")(hidden))
        hidden = hidden + nn.Dense(self.feature_size, dtype=self.dtype, name="fc2")(ffn)
        return _layer_norm("final_layer_norm", self.dtype)(hidden)


class MSDeformAttnEncoder(nn.Module):
    """`num_layers` `MSDeformAttnEncoderLayer`s named `layers_<k>` (transformers' `encoder.layers.<k>`)."""

    num_layers: int = 6
    feature_size: int = 256
    feedforward_dim: int = 1024
    num_heads: int = 8
    n_levels: int = 3
    n_points: int = 4
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden, position_embeddings, spatial_shapes: SpatialShapes):
        """`[B, S, C]` flattened levels -> `[B, S, C]`."""
        # No padding masks: valid ratios are all 1, so each query's reference point is its own pixel centre,
        # the same normalised point on every level.
        ref = encoder_reference_points(spatial_shapes, jnp.promote_types(self.dtype, jnp.float32))
        ref = jnp.broadcast_to(ref[None, :, None, :], (1, ref.shape[0], self.n_levels, 2))
        for k in range(self.num_layers):
            hidden = MSDeformAttnEncoderLayer(
                self.feature_size, self.feedforward_dim, self.num_heads, self.n_levels, self.n_points, self.dtype,
                name=f"layers_{k}",
            )(hidden, position_embeddings, ref, spatial_shapes)
        return hidden


class MSDeformAttnPixelDecoder(nn.Module):
    """Backbone maps `(res2, res3, res4, res5)` NHWC -> `(mask_features, (stride-32, stride-16, stride-8 maps))`.

    Defaults are the Swin-B ADE20K model's (docs/reference.md §5.2). `num_heads` is transformers'
    `config.num_attention_heads` (shared with the transformer decoder); `n_levels` and `n_points` are fixed
    at 3 and 4 there.
    """

    feature_size: int = 256
    mask_feature_size: int = 256
    encoder_layers: int = 6
    encoder_feedforward_dim: int = 1024
    num_heads: int = 8
    n_levels: int = 3
    n_points: int = 4
    feature_strides: tuple[int, ...] = (4, 8, 16, 32)
    common_stride: int = 4
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jax.Array]) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """
        Args:
          features: `len(feature_strides)` maps `[B, H_s, W_s, C_s]`, highest resolution first.

        Returns:
          `mask_features [B, H_4, W_4, mask_feature_size]` and `multi_scale_features`, a tuple of
          `n_levels` maps `[B, H_s, W_s, feature_size]` for the coarsest `n_levels` strides, coarsest first.
        """
        if len(features) != len(self.feature_strides):
            raise ValueError(f"expected {len(self.feature_strides)} feature maps, got {len(features)}")
        c, levels, dtype = self.feature_size, self.n_levels, self.dtype
        acc = jnp.promote_types(dtype, jnp.float32)
        batch = features[0].shape[0]

        # Encoder inputs, coarsest level first: input_projections_0 is applied to res5.
        coarse_first = list(features[::-1][:levels])
        level_embed = self.param("level_embed", nn.initializers.normal(1.0), (levels, c), jnp.float32)
        tokens, positions, shapes = [], [], []
        for i, x in enumerate(coarse_first):
            h, w = x.shape[1:3]
            shapes.append((h, w))
            tokens.append(ConvGroupNorm(c, dtype=dtype, name=f"input_projections_{i}")(x).reshape(batch, h * w, c))
            pos = jnp.asarray(sine_position_encoding(h, w, c // 2), acc).reshape(h * w, c)
            positions.append(pos + level_embed[i])
        shapes = tuple(shapes)
        hidden = jnp.concatenate(tokens, axis=1)
        position_embeddings = jnp.concatenate(positions, axis=0)[None].astype(hidden.dtype)

        hidden = MSDeformAttnEncoder(
            self.encoder_layers, c, self.encoder_feedforward_dim, self.num_heads, levels, self.n_points, dtype,
            name="encoder",
        )(hidden, position_embeddings, shapes)

        outputs, start = [], 0
        for h, w in shapes:
            outputs.append(hidden[:, start : start + h * w].reshape(batch, h, w, c))
            start += h * w
        multi_scale_features = tuple(outputs)

        # FPN on the strides finer than the encoder's (res2 only for strides 4..32, common_stride 4),
        # coarse to fine. Names adapter_1 / layer_1 are transformers' (index = position in `features` + 1).
        num_fpn_levels = int(round(math.log2(min(self.feature_strides[-levels:]) / self.common_stride)))
        fpn = outputs[-1]
        for idx in reversed(range(num_fpn_levels)):
            lateral = ConvGroupNorm(c, use_bias=False, dtype=dtype, name=f"adapter_{idx + 1}")(features[idx])
            upsampled = resize_bilinear(fpn, lateral.shape[1:3])
            fpn = ConvGroupNorm(c, kernel_size=3, use_bias=False, relu=True, dtype=dtype,
                                name=f"layer_{idx + 1}")(lateral + upsampled.astype(lateral.dtype))

        mask_features = nn.Conv(self.mask_feature_size, (1, 1), dtype=dtype, name="mask_projection")(fpn)
        return mask_features, multi_scale_features


def pixel_decoder_from_hf_config(config: dict, dtype=jnp.float32) -> MSDeformAttnPixelDecoder:
    """The decoder of a transformers `Mask2FormerConfig.to_dict()`."""
    return MSDeformAttnPixelDecoder(
        feature_size=config["feature_size"],
        mask_feature_size=config["mask_feature_size"],
        encoder_layers=config["encoder_layers"],
        encoder_feedforward_dim=config["encoder_feedforward_dim"],
        num_heads=config["num_attention_heads"],
        feature_strides=tuple(config.get("feature_strides", (4, 8, 16, 32))),
        common_stride=config.get("common_stride", 4),
        dtype=dtype,
    )


__all__ = [
    "ConvGroupNorm",
    "MSDeformAttnEncoder",
    "MSDeformAttnEncoderLayer",
    "MSDeformAttnPixelDecoder",
    "encoder_reference_points",
    "pixel_decoder_from_hf_config",
]
