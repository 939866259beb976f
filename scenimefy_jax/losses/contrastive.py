"""Contrastive losses on projected patches: PatchNCE/StylePatchNCE, hDCE, SRC (docs/reference.md §2.6).

Every function here takes the patches of ONE image, `q` (query: from the translated image, carries the
gradient) and `k` (key: from the source image, always stop-gradient), both `[P, D]` rows that the
projection head has L2-normalised. The official code runs at batch size 1, where a "group" of
negatives and the SRC similarity matrix are the P patches of one image; `batched(...)` vmaps these
functions over a leading batch axis and averages, which keeps that meaning for any batch size and any
sharding of the batch (docs/reference.md §2.10 Q6, Q14).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from scenimefy_jax.models.projection import l2_normalize

DIAGONAL_FILL = -10.0
"""Official `masked_fill_(diagonal, -10.0)`: the self-pair stays in the softmax as exp(-10/tau) (Q8)."""


def _fill_diagonal(m: jax.Array, value: float) -> jax.Array:
    return jnp.where(jnp.eye(m.shape[-1], dtype=bool), value, m)


def _negative_similarities(q: jax.Array, k: jax.Array, weights: jax.Array | None) -> jax.Array:
    """`n_ij = W_ij * q_i.k_j`, diagonal replaced by -10 after weighting: `[P, P]`."""
    neg = q @ k.T
    if weights is not None:
        neg = neg * weights
    return _fill_diagonal(neg, DIAGONAL_FILL)


def _positive_similarities(q: jax.Array, k: jax.Array) -> jax.Array:
    """`s_ii = q_i.k_i`: `[P]`."""
    return jnp.sum(q * k, axis=-1)


def patch_nce_loss(q: jax.Array, k: jax.Array, tau: float = 0.07, weights: jax.Array | None = None) -> jax.Array:
    """Official `PatchNCELoss` row losses `[P]`: cross-entropy with target 0 over
    `[s_ii, n_i1, ..., n_iP] / tau` (negatives: the other patches of the same image, diagonal -10).

    Used un-weighted as the StylePatchNCE of the supervised branch; with `weights` it is the
    monitoring value of hDCE.
    """
    q = q.astype(jnp.float32)
    k = jax.lax.stop_gradient(k.astype(jnp.float32))
    pos = _positive_similarities(q, k)
    neg = _negative_similarities(q, k, weights)
    logits = jnp.concatenate([pos[:, None], neg], axis=1) / tau
    return jax.nn.logsumexp(logits, axis=1) - logits[:, 0]


def hard_negative_weights(k: jax.Array, gamma: jax.Array | float) -> jax.Array:
    """Semantic-relation weights of hard negatives (official `SRC_Loss`, weight branch): `[P, P]`.

    `k` is re-normalised, `S = k k^T` with diagonal -10, softmax of `S / gamma` over each row, each row
    divided by its maximum (largest weight exactly 1). Stop-gradient throughout.
    """
    k = l2_normalize(jax.lax.stop_gradient(k.astype(jnp.float32)))
    seed = _fill_diagonal(k @ k.T, DIAGONAL_FILL)
    w = jax.nn.softmax(seed / gamma, axis=1)
    return jax.lax.stop_gradient(w / jnp.max(w, axis=1, keepdims=True))


def hdce_loss(q: jax.Array, k: jax.Array, weights: jax.Array | None, tau: float = 0.07) -> jax.Array:
    """Official `PatchHDCELoss`, averaged over rows, in its straight-through form (docs/reference.md §2.6, §2.10 Q7).

    With `v_i = logsumexp_j((n_ij - s_ii) / tau)` (weighted negatives, positive excluded from the
    denominator: decoupled CL), the official return value is
    `mean_i exp(v_i - sg(v_i)) - 1 + sg(CE_i)`: its VALUE is the weighted-negative PatchNCE
    cross-entropy (for logging), its GRADIENT is that of `mean_i v_i`. Reproduced term by term.
    """
    q = q.astype(jnp.float32)
    k = jax.lax.stop_gradient(k.astype(jnp.float32))
    pos = _positive_similarities(q, k)
    neg = _negative_similarities(q, k, weights)
    v = jax.nn.logsumexp((neg - pos[:, None]) / tau, axis=1)
    monitor = jax.lax.stop_gradient(jnp.mean(patch_nce_loss(q, k, tau, weights)))
    return jnp.mean(jnp.exp(v - jax.lax.stop_gradient(v))) - 1.0 + monitor


def _kl_sum(log_p: jax.Array, log_m: jax.Array) -> jax.Array:
    # `KLDivLoss(reduction='sum', log_target=True)(log m, log p)` = sum p * (log p - log m)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_m))


def src_loss(q: jax.Array, k: jax.Array) -> jax.Array:
    """Semantic relation consistency (official `SRC_Loss`): summed Jensen-Shannon divergence (scalar).

    Both sets are re-normalised; `A^q = softmax(q q^T)`, `A^k = sg(softmax(k k^T))`, softmax over the
    first axis (columns sum to one; the matrices are symmetric), no temperature, no diagonal mask;
    `JSD = 0.5 [sum A^q log(A^q / M) + sum A^k log(A^k / M)]`, `M = (A^q + A^k) / 2`, summed over all
    P*P entries (not a mean). Logs are taken of the softmax, as the official code does.
    """
    q = l2_normalize(q.astype(jnp.float32))
    k = l2_normalize(jax.lax.stop_gradient(k.astype(jnp.float32)))
    a_q = jax.nn.softmax(q @ q.T, axis=0)
    a_k = jax.lax.stop_gradient(jax.nn.softmax(k @ k.T, axis=0))
    log_m = jnp.log(0.5 * (a_q + a_k))
    return 0.5 * (_kl_sum(jnp.log(a_q), log_m) + _kl_sum(jnp.log(a_k), log_m))


def batched(loss_fn: Callable[..., jax.Array], reduce_rows: bool = True) -> Callable[..., jax.Array]:
    """Lifts a one-image loss to `[B, P, D]` inputs: vmapped over images, then averaged over B.

    Row-wise results (`patch_nce_loss`) are first averaged over rows when `reduce_rows`. Non-array
    arguments (tau, gamma, None weights) are broadcast.
    """

    def per_image(*args):
        out = loss_fn(*args)
        return jnp.mean(out) if reduce_rows else out

    def lifted(*args):
        axes = tuple(0 if getattr(a, "ndim", 0) == 3 else None for a in args)
        return jnp.mean(jax.vmap(per_image, in_axes=axes)(*args))

    return lifted
