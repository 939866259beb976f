"""CLIP vision transformer + visual projection in Flax (Hugging Face `CLIPModel` vision half), NHWC.

`CLIPVisionModel.__call__(pixels)` equals transformers' `CLIPModel.get_image_features(pixel_values)`
(the projected pooled embedding, not normalised). Defaults are OpenAI ViT-B/32: 224 px, patch 32,
width 768, 12 layers, 12 heads, MLP 3072, projection 512, `quick_gelu`, LayerNorm eps 1e-5.

Parameter names mirror the Hugging Face keys (`vision_model.` dropped, integer segments joined with `_`):
`embeddings/patch_embedding/kernel`, `embeddings/class_embedding`, `embeddings/position_embedding/embedding`,
`pre_layrnorm` (sic), `encoder/layers_3/self_attn/q_proj`, `.../mlp/fc1`, `post_layernorm`,
`visual_projection/kernel`.

`clip_preprocess` is the fine-tuning script's CLIP input transform (docs/reference.md §4.4): `x*0.5+0.5`, bicubic
resize to 224 exactly as PyTorch `F.interpolate(mode="bicubic", align_corners=False)` (Keys cubic with
a = -0.75, no antialiasing, border samples clamped; `jax.image.resize` uses a = -0.5 and antialiases
when downsampling, so it is not used), then the CLIP mean/std normalisation.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def quick_gelu(x):
    """OpenAI CLIP's activation `x * sigmoid(1.702 x)`."""
    return x * jax.nn.sigmoid(1.702 * x)


_ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": functools.partial(jax.nn.gelu, approximate=False)}


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


@functools.lru_cache(maxsize=64)
def bicubic_matrix(n_in: int, n_out: int, a: float = -0.75) -> np.ndarray:
    """`[n_out, n_in]` interpolation matrix of PyTorch's bicubic resize (align_corners=False).

    Source coordinate `(i + 0.5) * n_in / n_out - 0.5` (not clamped, as PyTorch does for cubic), four
    taps `floor - 1 .. floor + 2` with indices clamped to the border.
    """
    # Coordinates and weights in float32 arithmetic, as PyTorch computes them for float32 tensors (a
    # float64 computation differs from PyTorch by up to 1e-4 on 256 -> 224 because t loses bits).
    f32 = np.float32
    scale = f32(n_in) / f32(n_out)
    src = (np.arange(n_out, dtype=f32) + f32(0.5)) * scale - f32(0.5)
    base = np.floor(src)
    t = (src - base).astype(f32)
    a = f32(a)
    m = np.zeros((n_out, n_in), np.float32)
    for tap in range(-1, 3):
        idx = np.clip(base + tap, 0, n_in - 1).astype(int)
        np.add.at(m, (np.arange(n_out), idx), _cubic((t - f32(tap)).astype(f32), a).astype(f32))
    return m.astype(np.float32)


def resize_bicubic(x: jax.Array, height: int, width: int) -> jax.Array:
    """PyTorch-exact bicubic resize of `[B, H, W, C]` to `[B, height, width, C]` (two matrix products)."""
    my = jnp.asarray(bicubic_matrix(x.shape[1], height))
    mx = jnp.asarray(bicubic_matrix(x.shape[2], width))
    hp = jax.lax.Precision.HIGHEST
    x = jnp.einsum("oh,bhwc->bowc", my, x, precision=hp)
    return jnp.einsum("pw,bowc->bopc", mx, x, precision=hp)


def clip_preprocess(images: jax.Array, image_size: int = 224) -> jax.Array:
    """Generator images in [-1, 1] `[B, H, W, 3]` -> CLIP input `[B, image_size, image_size, 3]`.

    The fine-tuning script's transform, docs/reference.md §4.4.
    """
    x = images * 0.5 + 0.5
    x = resize_bicubic(x, image_size, image_size)
    return (x - jnp.asarray(CLIP_MEAN, x.dtype)) / jnp.asarray(CLIP_STD, x.dtype)


class Attention(nn.Module):
    num_heads: int

    @nn.compact
    def __call__(self, x):
        b, n, d = x.shape
        h = self.num_heads
        hd = d // h
        q = nn.Dense(d, name="q_proj")(x) * (hd**-0.5)
        k = nn.Dense(d, name="k_proj")(x)
        v = nn.Dense(d, name="v_proj")(x)
        split = lambda t: t.reshape(b, n, h, hd)  # noqa: E731
        logits = jnp.einsum("bqhd,bkhd->bhqk", split(q), split(k))
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, split(v)).reshape(b, n, d)
        return nn.Dense(d, name="out_proj")(out)


class EncoderLayer(nn.Module):
    num_heads: int
    intermediate_size: int
    eps: float
    hidden_act: str

    @nn.compact
    def __call__(self, x):
        x = x + Attention(self.num_heads, name="self_attn")(nn.LayerNorm(self.eps, name="layer_norm1")(x))
        y = nn.LayerNorm(self.eps, name="layer_norm2")(x)
        return x + MLP(self.intermediate_size, self.hidden_act, name="mlp")(y)


class MLP(nn.Module):
    intermediate_size: int
    hidden_act: str

    @nn.compact
    def __call__(self, x):
        y = _ACTIVATIONS[self.hidden_act](nn.Dense(self.intermediate_size, name="fc1")(x))
        return nn.Dense(x.shape[-1], name="fc2")(y)


class Embeddings(nn.Module):
    hidden_size: int
    patch_size: int
    image_size: int

    @nn.compact
    def __call__(self, pixels):
        b = pixels.shape[0]
        p = self.patch_size
        x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding="VALID", use_bias=False, name="patch_embedding")(
            pixels
        )
        x = x.reshape(b, -1, self.hidden_size)
        cls = self.param("class_embedding", nn.initializers.normal(0.02), (self.hidden_size,))
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.hidden_size)), x], axis=1)
        n_pos = (self.image_size // p) ** 2 + 1
        if x.shape[1] != n_pos:
            raise ValueError(f"CLIP expects {self.image_size}x{self.image_size} inputs, got {pixels.shape[1:3]}")
        pos = nn.Embed(n_pos, self.hidden_size, name="position_embedding")(jnp.arange(n_pos))
        return x + pos[None]


class CLIPVisionModel(nn.Module):
    """`pixels [B, image_size, image_size, 3]` (CLIP-normalised) -> image features `[B, projection_dim]`."""

    image_size: int = 224
    patch_size: int = 32
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    projection_dim: int = 512
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"

    @nn.compact
    def __call__(self, pixels, return_tokens: bool = False):
        x = Embeddings(self.hidden_size, self.patch_size, self.image_size, name="embeddings")(pixels)
        x = nn.LayerNorm(self.layer_norm_eps, name="pre_layrnorm")(x)
        enc = _Encoder(self.num_layers, self.num_heads, self.intermediate_size, self.layer_norm_eps, self.hidden_act,
                       name="encoder")
        x = enc(x)
        pooled = nn.LayerNorm(self.layer_norm_eps, name="post_layernorm")(x[:, 0])
        features = nn.Dense(self.projection_dim, use_bias=False, name="visual_projection")(pooled)
        return (features, x) if return_tokens else features


class _Encoder(nn.Module):
    num_layers: int
    num_heads: int
    intermediate_size: int
    eps: float
    hidden_act: str

    @nn.compact
    def __call__(self, x):
        for i in range(self.num_layers):
            x = EncoderLayer(self.num_heads, self.intermediate_size, self.eps, self.hidden_act, name=f"layers_{i}")(x)
        return x


def encode_images(model: CLIPVisionModel, params, images: jax.Array) -> jax.Array:
    """Generator images in [-1, 1] `[B, H, W, 3]` -> L2-normalised CLIP embeddings `[B, projection_dim]`."""
    features = model.apply({"params": params}, clip_preprocess(images, model.image_size))
    return features / jnp.linalg.norm(features, axis=-1, keepdims=True)


def vit_b32() -> CLIPVisionModel:
    return CLIPVisionModel()


__all__ = [
    "CLIPVisionModel",
    "CLIP_MEAN",
    "CLIP_STD",
    "bicubic_matrix",
    "clip_preprocess",
    "encode_images",
    "quick_gelu",
    "resize_bicubic",
    "vit_b32",
]
