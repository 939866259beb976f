"""Segmentation-guided selection of pseudo pairs: the official math (docs/reference.md §3.4) and the rules.

All functions are pure `jnp` and batched over candidates:

* `segmenter_input(images)`: generator output in [-1, 1] -> the 0..255 RGB the segmenter is fed,
  `round((x + 1) * 255 / 2)`, unclamped as the official code (quirk P2) unless `clamp=True`;
* `seg_statistics(sem_anime, sem_photo)`: `seg_loss` = cross-entropy of the anime image's `sem_seg`
  scores, used as logits, against the argmax of the photo's, averaged over pixels; `seg_classes` =
  the number of distinct argmax classes in the photo; and which classes the photo shows;
* `accept(...)`: `official` (`seg_loss < seg_loss_th` and `seg_classes > seg_cat_th`),
  `top_fraction` (the best `q` of each batch by `seg_loss`, among those with enough classes; for
  segmenters whose score scale differs), or `none` (every candidate).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("official", "top_fraction", "none")


def segmenter_input(images: jnp.ndarray, *, clamp: bool = False) -> jnp.ndarray:
    """`[B, H, W, 3]` in [-1, 1] -> float32 0..255 scale, rounded (half to even, as `torch.round`)."""
    x = jnp.round((images.astype(jnp.float32) + 1.0) * 255.0 / 2.0)
    return jnp.clip(x, 0.0, 255.0) if clamp else x


def seg_statistics(sem_anime: jnp.ndarray, sem_photo: jnp.ndarray):
    """`[B, H, W, K]` scores of the anime and the photo image -> `(seg_loss [B], seg_classes [B], present [B, K])`.

    `seg_loss` is `torch.nn.CrossEntropyLoss()(sem_anime as logits, argmax(sem_photo))` over the pixels
    of each candidate (the official loop runs one candidate at a time).
    """
    k = sem_photo.shape[-1]
    labels = jnp.argmax(sem_photo, axis=-1)  # [B, H, W]; ties -> first class, as torch.argmax
    logits = sem_anime.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    nll = jax.nn.logsumexp(logits, axis=-1) - picked
    seg_loss = jnp.mean(nll, axis=(1, 2))
    counts = jax.vmap(lambda l: jnp.zeros((k,), jnp.int32).at[l.reshape(-1)].add(1))(labels)
    present = counts > 0
    return seg_loss, jnp.sum(present, axis=-1).astype(jnp.int32), present


def accept(seg_loss: np.ndarray, seg_classes: np.ndarray, *, mode: str, seg_loss_th: float = 5.0,
           seg_cat_th: int = 1, top_fraction: float = 0.5) -> np.ndarray:
    """Accept decisions `[B]` bool for one batch of candidates (host numpy)."""
    seg_loss = np.asarray(seg_loss, np.float64)
    seg_classes = np.asarray(seg_classes)
    if mode == "none":
        return np.ones(seg_loss.shape, bool)
    enough = (seg_classes > seg_cat_th) & np.isfinite(seg_loss)  # a NaN loss is never accepted
    if mode == "official":
        return (seg_loss < seg_loss_th) & enough
    if mode == "top_fraction":
        keep = int(np.ceil(top_fraction * len(seg_loss)))
        order = np.lexsort((np.arange(len(seg_loss)), np.where(enough, seg_loss, np.inf)))  # stable by loss
        chosen = np.zeros(seg_loss.shape, bool)
        chosen[order[:keep]] = True
        return chosen & enough
    raise ValueError(f"selection mode must be one of {MODES}, got {mode!r}")
