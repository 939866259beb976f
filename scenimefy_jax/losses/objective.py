"""Per-layer sums of the contrastive losses and the total generator objective (docs/reference.md §2.6-2.7).

Inputs are lists over the nce layers of projected patches `[B, P_l, D]` (B images; each image is its
own group of negatives and its own SRC matrix, as at the official batch size 1) and the un-weighted
GAN / VGG terms. Everything is averaged over the batch, so the result does not depend on how the
batch is split across devices.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from scenimefy_jax.losses.contrastive import batched, hard_negative_weights, hdce_loss, patch_nce_loss, src_loss

FAITHFUL_TO = ("official_code", "paper")


def _check_mode(faithful_to: str) -> None:
    if faithful_to not in FAITHFUL_TO:
        raise ValueError(f"faithful_to must be one of {FAITHFUL_TO}, got {faithful_to!r}")


def layer_weights(keys: Sequence[jax.Array], gamma: jax.Array | float) -> list[jax.Array]:
    """Hard-negative weights per layer, per image: list of `[B, P_l, P_l]` (stop-gradient)."""
    return [jax.vmap(hard_negative_weights, in_axes=(0, None))(k, gamma) for k in keys]


def src_term(queries, keys, lambda_src: float) -> jax.Array:
    """`L_SRC = (1/L) sum_l lambda_SRC * JSD_l` (JSD summed over the P x P entries, mean over images)."""
    per_layer = [batched(src_loss)(q, k) for q, k in zip(queries, keys)]
    return sum(lambda_src * x for x in per_layer) / len(per_layer)


def hdce_term(queries, keys, weights, lambda_hdce: float, tau: float) -> jax.Array:
    """`L_HDCE = (1/L) sum_l lambda_HDCE * hDCE_l` (straight-through form, docs/reference.md §2.10 Q7)."""
    per_layer = [batched(hdce_loss)(q, k, w, tau) for q, k, w in zip(queries, keys, weights)]
    return sum(lambda_hdce * x for x in per_layer) / len(per_layer)


def style_nce_term(queries, keys, lambda_nce_s: float, tau: float, faithful_to: str) -> jax.Array:
    """StylePatchNCE of the supervised branch.

    Official: `lambda_s * (1/L) sum_l lambda_s * mean_i l_i` (the weight applied twice, Q2);
    paper: a single `lambda_s`. The supervised weight lambda_pair is applied by the caller.
    """
    _check_mode(faithful_to)
    per_layer = [batched(patch_nce_loss)(q, k, tau) for q, k in zip(queries, keys)]
    inner = sum(lambda_nce_s * x for x in per_layer) / len(per_layer)
    return inner * lambda_nce_s if faithful_to == "official_code" else inner


def generator_objective(
    *,
    gan: jax.Array,
    gan_pair: jax.Array,
    hdce_x: jax.Array,
    hdce_y: jax.Array | None,
    src: jax.Array,
    style_nce: jax.Array,
    lambda_pair: jax.Array | float,
    vgg: jax.Array | None = None,
) -> jax.Array:
    """`L_G = [L_VGG] + L_GAN + L_HDCE_both + L_SRC + lambda_pair * (L_GAN_p + L_style)` (docs/reference.md §2.7).

    All terms already carry their lambda; `L_HDCE_both = (L_HDCE + L_HDCE_Y) / 2` when the identity
    branch is on (`dce_idt`), else `L_HDCE`.
    """
    hdce_both = hdce_x if hdce_y is None else 0.5 * (hdce_x + hdce_y)
    total = gan + hdce_both + src + lambda_pair * (gan_pair + style_nce)
    if vgg is not None:
        total = vgg + total
    return jnp.asarray(total, jnp.float32)
