"""LSGAN losses (`GANLoss('lsgan')`: MSE against 1 for real, 0 for fake), docs/reference.md §2.6.

Means are over every patch score and every image. Patch maps have the same size for all images of a
batch, so this equals the mean of per-image losses (docs/reference.md §2.10 Q14) and is independent of sharding.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def lsgan_loss(pred: jax.Array, target_is_real: bool) -> jax.Array:
    """`MSE(pred, 1 if real else 0)` over all elements of `pred` `[B, H, W, 1]`."""
    target = 1.0 if target_is_real else 0.0
    return jnp.mean(jnp.square(pred.astype(jnp.float32) - target))


def discriminator_loss(pred_fake: jax.Array, pred_real: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`L_D = 0.5 * (MSE(D(fake), 0) + MSE(D(real), 1))`; returns `(L_D, fake term, real term)`."""
    fake = lsgan_loss(pred_fake, False)
    real = lsgan_loss(pred_real, True)
    return 0.5 * (fake + real), fake, real


def generator_gan_loss(pred_fake: jax.Array) -> jax.Array:
    """The generator side: `MSE(D(G(x)), 1)` (un-weighted)."""
    return lsgan_loss(pred_fake, True)
