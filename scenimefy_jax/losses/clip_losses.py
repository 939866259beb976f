"""CLIP losses of the StyleGAN fine-tuning (docs/reference.md §4.4): global cosine loss and the patch-wise CLIP
contrastive loss (OneshotCLIP `PatchLoss`), with the official grouping and the paper-style one (S2).

Embeddings come from `scenimefy_jax.models.clip.encode_images` (L2-normalised CLIP features).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

GROUPINGS = ("official", "per_image")


def _cosine(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
    # torch.nn.functional.cosine_similarity: x.y / max(|x| |y|, eps)
    na = jnp.linalg.norm(a, axis=-1)
    nb = jnp.linalg.norm(b, axis=-1)
    return jnp.sum(a * b, axis=-1) / jnp.maximum(na * nb, eps)


def clip_global_loss(source_embed: jax.Array, target_embed: jax.Array) -> jax.Array:
    """`mean_b (1 - cos(E(x_s), E(G_t(z))))` on `[B, D]` embeddings."""
    return jnp.mean(1.0 - _cosine(source_embed, target_embed))


def sample_crop_positions(key: jax.Array, n_crops: int = 16, image_size: int = 256, crop_size: int = 32) -> jax.Array:
    """`[n_crops, 2]` top-left (y, x) corners uniform in `[0, image_size - crop_size)` (numpy `randint`)."""
    return jax.random.randint(key, (n_crops, 2), 0, image_size - crop_size)


def extract_crops(images: jax.Array, positions: jax.Array, crop_size: int = 32) -> jax.Array:
    """`[B, H, W, C]` -> `[n_crops * B, crop, crop, C]`, crop-major (crop0 img0..imgB-1, crop1 ...),
    one position per crop shared by every image, as the official script concatenates them."""
    b, _, _, c = images.shape

    def one(pos):
        return jax.lax.dynamic_slice(images, (0, pos[0], pos[1], 0), (b, crop_size, crop_size, c))

    crops = jax.vmap(one)(positions)  # [n, B, crop, crop, C]
    return crops.reshape((-1,) + crops.shape[2:])


def patch_nce_rows(feat_q: jax.Array, feat_k: jax.Array, n_groups: int, tau: float = 1.0) -> jax.Array:
    """OneshotCLIP `PatchLoss` per row: `[N, D]` query (target) and key (source) features -> `[N]` CE.

    Positive: cosine(q_i, k_i). Negatives: cosine of q_i with the other keys of its group, where groups
    are formed by reshaping the N rows to `[n_groups, N / n_groups, D]` without reordering; the diagonal
    is filled with -10 and stays in the softmax (as the official masked_fill). Logits / tau, CE to 0.
    Keys are detached (`feat_k.detach()`); cosines use plain norms (no eps), as the official code.
    """
    feat_k = jax.lax.stop_gradient(feat_k)
    n, d = feat_q.shape
    if n % n_groups:
        raise ValueError(f"{n} patch rows cannot form {n_groups} groups")
    qn = jnp.linalg.norm(feat_q, axis=-1, keepdims=True)
    kn = jnp.linalg.norm(feat_k, axis=-1, keepdims=True)
    l_pos = jnp.sum(feat_q * feat_k, axis=-1, keepdims=True) / (qn * kn)
    q = feat_q.reshape(n_groups, -1, d)
    k = feat_k.reshape(n_groups, -1, d)
    p = q.shape[1]
    l_neg = jnp.einsum("gid,gjd->gij", q, k) / (qn.reshape(n_groups, p, 1) * kn.reshape(n_groups, 1, p))
    l_neg = jnp.where(jnp.eye(p, dtype=bool)[None], -10.0, l_neg).reshape(-1, p)
    logits = jnp.concatenate([l_pos, l_neg], axis=1) / tau
    return -jax.nn.log_softmax(logits, axis=1)[:, 0]


def patch_clip_loss(
    target_feats: jax.Array,
    source_feats: jax.Array,
    batch: int,
    *,
    tau: float = 1.0,
    grouping: str = "official",
) -> jax.Array:
    """Patch CLIP contrastive loss on crop-major `[n_crops * batch, D]` CLIP embeddings (mean over rows).

    grouping="official" (docs/reference.md §4.4): the rows are reshaped to `batch` groups without reordering (with
    batch == n_crops each group is one crop location across the images; otherwise groups mix
    locations and images). grouping="per_image" (S2, paper-style): each group holds the crops of one
    image, so negatives are other locations of the same image.
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    if grouping == "per_image":
        d = target_feats.shape[-1]
        reorder = lambda f: jnp.swapaxes(f.reshape(-1, batch, d), 0, 1).reshape(-1, d)  # noqa: E731
        target_feats, source_feats = reorder(target_feats), reorder(source_feats)
    return jnp.mean(patch_nce_rows(target_feats, source_feats, batch, tau))
