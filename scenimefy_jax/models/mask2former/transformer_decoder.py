"""Mask2Former's masked-attention transformer decoder (`MultiScaleMaskedTransformerDecoder`), NHWC.

docs/reference.md §5.2: learned queries (`queries_features`, the content, and `queries_embedder`, their
position) attend in turn to the three pixel-decoder scales (strides 32, 16, 8, 32, ...). Each layer is
post-norm: masked cross-attention, self-attention, FFN. Before the first layer and after every layer,
the shared prediction heads read the LayerNorm-ed queries: the class head (in the top-level model) and
the mask head, an MLP whose output is dotted with the stride-4 `mask_features`. The next layer's
attention mask is `sigmoid(mask logits resized to its scale) < 0.5`, a row that would mask every key
being reset to no mask at all.

Parameter names are transformers 5.x's (`Mask2FormerTransformerModule`), see
`scenimefy_jax.convert.mask2former_keys`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from scenimefy_jax.models.mask2former.position_encoding import sine_position_encoding
from scenimefy_jax.models.resize import resize_bilinear

NUM_LEVELS = 3


def _split_heads(x, heads):
    b, n, d = x.shape
    return x.reshape(b, n, heads, d // heads)


def _attention(q, k, v, heads, mask=None):
    """Scaled dot-product attention, `[B, N, D]` inputs; `mask` `[B, Nq, Nk]` True = not attended."""
    q, k, v = (_split_heads(t, heads) for t in (q, k, v))
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k).astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask[:, None], -jnp.inf, logits)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return out.reshape(out.shape[0], out.shape[1], -1)


class SelfAttention(nn.Module):
    """transformers' `Mask2FormerAttention`: position added to queries and keys, not to values."""

    dim: int
    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, pos):
        dense = lambda name: nn.Dense(self.dim, dtype=self.dtype, name=name)  # noqa: E731
        xp = x + pos
        out = _attention(dense("q_proj")(xp), dense("k_proj")(xp), dense("v_proj")(x), self.heads)
        return dense("out_proj")(out)


class CrossAttention(nn.Module):
    """`torch.nn.MultiheadAttention` (packed `in_proj_weight` `[3D, D]` rows q | k | v), with a mask."""

    dim: int
    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, query, key, value, mask):
        w = self.param("in_proj_weight", nn.initializers.xavier_uniform(), (3 * self.dim, self.dim))
        b = self.param("in_proj_bias", nn.initializers.zeros, (3 * self.dim,))
        w, b = w.astype(self.dtype), b.astype(self.dtype)
        d = self.dim
        q = query @ w[:d].T + b[:d]
        k = key @ w[d:2 * d].T + b[d:2 * d]
        v = value @ w[2 * d:].T + b[2 * d:]
        out = _attention(q, k, v, self.heads, mask)
        return nn.Dense(self.dim, dtype=self.dtype, name="out_proj")(out)


class DecoderLayer(nn.Module):
    """One post-norm layer: masked cross-attention, self-attention, FFN (ReLU)."""

    dim: int
    heads: int
    ffn_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, query_pos, memory, memory_pos, mask):
        norm = lambda name: nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name=name)  # noqa: E731
        attended = CrossAttention(self.dim, self.heads, self.dtype, name="cross_attn")(
            x + query_pos, memory + memory_pos, memory, mask)
        x = norm("cross_attn_layer_norm")(x + attended)
        x = norm("self_attn_layer_norm")(x + SelfAttention(self.dim, self.heads, self.dtype, name="self_attn")(x, query_pos))
        hidden = nn.relu(nn.Dense(self.ffn_dim, dtype=self.dtype, name="fc1")(x))
        return norm("final_layer_norm")(x + nn.Dense(self.dim, dtype=self.dtype, name="fc2")(hidden))


class PredictionBlock(nn.Module):
    """transformers' `Mask2FormerPredictionBlock`: a Linear stored as child `"0"` (then the activation)."""

    features: int
    relu: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.features, dtype=self.dtype, name="0")(x)
        return nn.relu(x) if self.relu else x


class MaskPredictor(nn.Module):
    """Mask head: MLP (3 layers, ReLU between) on the queries, dotted with the stride-4 features."""

    hidden_dim: int
    mask_dim: int
    dtype: Any = jnp.float32

    def setup(self):
        dims = (self.hidden_dim, self.hidden_dim, self.mask_dim)
        self.mask_embedder = [PredictionBlock(d, i < 2, self.dtype) for i, d in enumerate(dims)]

    def __call__(self, queries, mask_features):
        """`queries [B, Q, D]`, `mask_features [B, H, W, M]` -> mask logits `[B, Q, H, W]` (float32)."""
        embedding = queries
        for block in self.mask_embedder:
            embedding = block(embedding)
        return jnp.einsum("bqc,bhwc->bqhw", embedding, mask_features.astype(embedding.dtype)).astype(jnp.float32)


def attention_mask(mask_logits: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """`[B, Q, h*w]` True where a query may NOT attend: `sigmoid(resized logits) < 0.5`, full rows reset."""
    resized = resize_bilinear(mask_logits, size, channels_last=False)
    masked = (jax.nn.sigmoid(resized) < 0.5).reshape(*resized.shape[:2], -1)
    return masked & ~jnp.all(masked, axis=-1, keepdims=True)


class MaskedAttentionDecoder(nn.Module):
    """transformers' `Mask2FormerMaskedAttentionDecoder`: the layers, the final LayerNorm, the mask head."""

    hidden_dim: int = 256
    mask_dim: int = 256
    num_layers: int = 9
    heads: int = 8
    ffn_dim: int = 2048
    dtype: Any = jnp.float32

    def setup(self):
        self.layers = [DecoderLayer(self.hidden_dim, self.heads, self.ffn_dim, self.dtype)
                       for _ in range(self.num_layers)]
        self.layernorm = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype)
        self.mask_predictor = MaskPredictor(self.hidden_dim, self.mask_dim, self.dtype)

    def __call__(self, queries, query_pos, memories, memory_pos, sizes, mask_features):
        """Returns the LayerNorm-ed queries `[L+1, B, Q, D]` and mask logits `[L+1, B, Q, H/4, W/4]`."""
        states, masks = [], []
        normed = self.layernorm(queries)
        mask_logits = self.mask_predictor(normed, mask_features)
        states.append(normed)
        masks.append(mask_logits)
        x = queries
        for i, layer in enumerate(self.layers):
            level = i % NUM_LEVELS
            mask = jax.lax.stop_gradient(attention_mask(mask_logits, sizes[level]))
            x = layer(x, query_pos, memories[level], memory_pos[level], mask)
            normed = self.layernorm(x)
            mask_logits = self.mask_predictor(normed, mask_features)
            states.append(normed)
            masks.append(mask_logits)
        return jnp.stack(states), jnp.stack(masks)


class TransformerModule(nn.Module):
    """transformers' `Mask2FormerTransformerModule`: queries, level embeddings, position codes, decoder.

    `multi_scale_features`: the three pixel-decoder outputs, NHWC, strides 32, 16, 8 (in that order).
    """

    in_features: int = 256
    hidden_dim: int = 256
    mask_dim: int = 256
    num_queries: int = 100
    num_layers: int = 9
    heads: int = 8
    ffn_dim: int = 2048
    enforce_input_projection: bool = False
    dtype: Any = jnp.float32

    def setup(self):
        self.queries_embedder = nn.Embed(self.num_queries, self.hidden_dim)
        self.queries_features = nn.Embed(self.num_queries, self.hidden_dim)
        self.level_embed = nn.Embed(NUM_LEVELS, self.hidden_dim)
        if self.in_features != self.hidden_dim or self.enforce_input_projection:
            self.input_projections = [nn.Conv(self.hidden_dim, (1, 1), dtype=self.dtype) for _ in range(NUM_LEVELS)]
        else:  # identity, as the official decoder when the pixel decoder already has hidden_dim channels
            self.input_projections = None
        self.decoder = MaskedAttentionDecoder(self.hidden_dim, self.mask_dim, self.num_layers, self.heads,
                                              self.ffn_dim, self.dtype)

    def __call__(self, multi_scale_features, mask_features):
        batch = mask_features.shape[0]
        memories, memory_pos, sizes = [], [], []
        for level, feature in enumerate(multi_scale_features):
            _, h, w, _ = feature.shape
            sizes.append((h, w))
            pos = jnp.asarray(sine_position_encoding(h, w, self.hidden_dim // 2), self.dtype)
            memory_pos.append(jnp.broadcast_to(pos.reshape(1, h * w, -1), (batch, h * w, self.hidden_dim)))
            if self.input_projections is not None:
                feature = self.input_projections[level](feature)
            level_embedding = self.level_embed.embedding[level].astype(self.dtype)
            memories.append(feature.astype(self.dtype).reshape(batch, h * w, -1) + level_embedding)
        tile = lambda table: jnp.broadcast_to(table.astype(self.dtype), (batch, *table.shape))  # noqa: E731
        return self.decoder(tile(self.queries_features.embedding), tile(self.queries_embedder.embedding),
                            memories, memory_pos, sizes, mask_features)
