"""Mask2Former for semantic segmentation: Swin backbone, deformable pixel decoder, masked decoder.

`Mask2Former` is transformers' `Mask2FormerForUniversalSegmentation` (equivalently detectron2's
`MaskFormer` meta-architecture in eval mode) on normalised NHWC pixels; `semantic_segmentation` is
detectron2's semantic inference (docs/reference.md §5.2). Defaults are the Swin-B / ADE20K-150 model
Scenimefy filters its pseudo pairs with (`model_final_503e96.pkl`, docs/reference.md §5.1).

Parameter names are transformers 5.x's (`scenimefy_jax.convert.mask2former_keys`):
`pixel_level_module/encoder` (Swin), `pixel_level_module/decoder` (pixel decoder),
`transformer_module`, `class_predictor`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scenimefy_jax.models.mask2former.pixel_decoder import MSDeformAttnPixelDecoder
from scenimefy_jax.models.mask2former.swin import SwinBackbone
from scenimefy_jax.models.mask2former.transformer_decoder import TransformerModule
from scenimefy_jax.models.resize import resize_bilinear

# detectron2's PIXEL_MEAN / PIXEL_STD for this model, on the 0..255 RGB scale (docs/reference.md §5.2).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
SIZE_DIVISIBILITY = 32


class PixelLevelModule(nn.Module):
    """Backbone (`encoder`) and pixel decoder (`decoder`), as transformers groups them."""

    config: "Mask2FormerConfig"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pixels):
        c = self.config
        features = SwinBackbone(
            embed_dim=c.embed_dim, depths=c.depths, num_heads=c.swin_heads, window_size=c.window_size,
            mlp_ratio=c.mlp_ratio, dtype=self.dtype, name="encoder",
        )(pixels)
        return MSDeformAttnPixelDecoder(
            feature_size=c.feature_size, mask_feature_size=c.mask_feature_size,
            encoder_layers=c.encoder_layers, encoder_feedforward_dim=c.encoder_feedforward_dim,
            num_heads=c.encoder_heads, n_points=c.encoder_points, dtype=self.dtype, name="decoder",
        )(features)


@dataclasses.dataclass(frozen=True)
class Mask2FormerConfig:
    """Architecture sizes; the defaults are the Swin-B / ADE20K-150 semantic model."""

    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    swin_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 12
    mlp_ratio: float = 4.0
    feature_size: int = 256  # pixel decoder width
    mask_feature_size: int = 256
    encoder_layers: int = 6
    encoder_feedforward_dim: int = 1024
    encoder_heads: int = 8
    encoder_points: int = 4
    hidden_dim: int = 256  # transformer decoder width
    num_queries: int = 100
    decoder_layers: int = 9  # transformers' `decoder_layers` counts one more (detectron2 DEC_LAYERS = 10)
    decoder_heads: int = 8
    dim_feedforward: int = 2048
    num_labels: int = 150

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "Mask2FormerConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"model"})
        if unknown:
            raise ValueError(f"unknown Mask2Former architecture fields: {', '.join(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names})


class Mask2Former(nn.Module):
    """`__call__(pixels [B, H, W, 3] normalised, H and W multiples of 32)` ->
    `(class_logits [B, Q, K+1], mask_logits [B, Q, H/4, W/4])` of the last decoder layer (float32);
    `all_layers=True` returns them for the initial prediction and every layer, stacked first."""

    config: Mask2FormerConfig = Mask2FormerConfig()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pixels, all_layers: bool = False):
        c = self.config
        mask_features, multi_scale = PixelLevelModule(c, self.dtype, name="pixel_level_module")(pixels.astype(self.dtype))
        states, mask_logits = TransformerModule(
            in_features=c.feature_size, hidden_dim=c.hidden_dim, mask_dim=c.mask_feature_size,
            num_queries=c.num_queries, num_layers=c.decoder_layers, heads=c.decoder_heads,
            ffn_dim=c.dim_feedforward, dtype=self.dtype, name="transformer_module",
        )(multi_scale, mask_features)
        class_logits = nn.Dense(c.num_labels + 1, dtype=self.dtype, name="class_predictor")(states).astype(jnp.float32)
        if all_layers:
            return class_logits, mask_logits
        return class_logits[-1], mask_logits[-1]


def normalize_and_pad(images: jnp.ndarray) -> jnp.ndarray:
    """`[B, H, W, 3]` RGB on the 0..255 scale -> normalised, zero-padded bottom/right to multiples of 32.

    As detectron2: normalise first, then pad, so the padding is 0 in the normalised space.
    """
    mean = jnp.asarray(PIXEL_MEAN, jnp.float32)
    std = jnp.asarray(PIXEL_STD, jnp.float32)
    x = (images.astype(jnp.float32) - mean) / std
    _, h, w, _ = x.shape
    ph, pw = -h % SIZE_DIVISIBILITY, -w % SIZE_DIVISIBILITY
    return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0))) if ph or pw else x


def semantic_segmentation(class_logits, mask_logits, image_size, output_size=None):
    """detectron2's semantic inference -> `[B, H, W, K]` float32 scores (channels last).

    Mask logits are upsampled to the padded input size (4x their size, bilinear, align_corners=False),
    `sem_seg[c] = sum_q softmax(class_q)[c] * sigmoid(mask_q)` over the K real classes (the last class,
    "no object", dropped), then cropped to `image_size` and resized to `output_size` (default: the same).
    """
    b, q, mh, mw = mask_logits.shape
    padded = resize_bilinear(mask_logits, (4 * mh, 4 * mw), channels_last=False)
    probs = jax.nn.softmax(class_logits.astype(jnp.float32), axis=-1)[..., :-1]
    sem = jnp.einsum("bqk,bqhw->bhwk", probs, jax.nn.sigmoid(padded))
    h, w = image_size
    sem = sem[:, :h, :w]
    if output_size is not None and tuple(output_size) != (h, w):
        sem = resize_bilinear(sem, tuple(output_size))
    return sem


def init_params(config: Mask2FormerConfig, seed: int = 0) -> Any:
    """Random float32 parameters (host numpy), for tests, demos and benchmarks.

    Drawn with numpy from the parameter shapes, so no initialiser is compiled: kernels and tables
    N(0, 1/fan_in), embeddings N(0, 1), biases N(0, 0.02), norm scales 1 + N(0, 0.02).
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        shape = tuple(leaf.shape)
        if name == "scale":
            return (1 + 0.02 * rng.standard_normal(shape)).astype(np.float32)
        if name.endswith("bias") or len(shape) == 1:
            return (0.02 * rng.standard_normal(shape)).astype(np.float32)
        if name == "embedding":
            return rng.standard_normal(shape).astype(np.float32)
        fan_in = int(np.prod(shape[:-1])) if name == "kernel" else shape[-1]
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, param_shapes(config))


def param_shapes(config: Mask2FormerConfig) -> Any:
    """The parameter tree as `ShapeDtypeStruct`s (no computation)."""
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    return jax.eval_shape(lambda k, x: Mask2Former(config).init(k, x), jax.random.key(0), x)["params"]
