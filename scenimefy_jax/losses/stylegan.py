"""StyleGAN2 adversarial losses and the lazy R1 penalty (rosinality `train.py`, docs/reference.md §4.4).

Pure functions of arrays; `r1_penalty` differentiates a discriminator function with respect to its
input, so it composes with `jax.grad` over the discriminator parameters (second order, as PyTorch's
`create_graph=True`).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def d_logistic_loss(real_pred: jax.Array, fake_pred: jax.Array) -> jax.Array:
    """Non-saturating D loss `mean softplus(-D(real)) + mean softplus(D(fake))`; logits `[B, 1]`."""
    return jnp.mean(jax.nn.softplus(-real_pred)) + jnp.mean(jax.nn.softplus(fake_pred))


def g_nonsaturating_loss(fake_pred: jax.Array) -> jax.Array:
    """Non-saturating G loss `mean softplus(-D(G(z)))`."""
    return jnp.mean(jax.nn.softplus(-fake_pred))


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], real_images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """R1: `mean_b sum_{h,w,c} (d/dx sum D(x))^2` at the real images `[B, H, W, 3]`.

    Returns `(penalty, real_pred)`; `d_fn(x) -> logits [B, 1]` (e.g. `lambda x: D.apply(v, x)`).
    """
    real_pred, vjp = jax.vjp(d_fn, real_images)
    (grad,) = vjp(jnp.ones_like(real_pred))
    penalty = jnp.mean(jnp.sum(jnp.square(grad).reshape(grad.shape[0], -1), axis=1))
    return penalty, real_pred


def lazy_r1_loss(penalty: jax.Array, gamma: float = 10.0, every: int = 16) -> jax.Array:
    """Lazy regularisation scaling: `gamma / 2 * every * penalty` (applied once every `every` D steps)."""
    return gamma / 2 * every * penalty


def lazy_adam_hparams(lr: float, reg_every: int, beta2: float = 0.99) -> tuple[float, tuple[float, float]]:
    """rosinality's Adam settings under lazy regularisation: `lr * c`, betas `(0, beta2 ** c)`, `c = k/(k+1)`."""
    c = reg_every / (reg_every + 1)
    return lr * c, (0.0, beta2**c)
