"""The optional VGG19 content loss (docs/reference.md §2.6, §2.10 Q3). Disabled by the official train.sh."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def vgg_input_for_fake(fake: jax.Array, faithful_to: str) -> jax.Array:
    """Maps the translated image (in [-1, 1]) to the VGG input.

    The official code writes `self.fake_B + 1 / 2.`, i.e. `G(x) + 0.5` (range [-0.5, 1.5]); the
    intended mapping, used for the real photo, is `(G(x) + 1) / 2`.
    """
    if faithful_to == "official_code":
        return fake + 0.5
    if faithful_to == "paper":
        return (fake + 1.0) / 2.0
    raise ValueError(f"faithful_to must be 'official_code' or 'paper', got {faithful_to!r}")


def vgg_content_loss(fake_features: jax.Array, real_features: jax.Array) -> jax.Array:
    """`MSE(VGG(fake), sg(VGG(real)))` over all elements (un-weighted).

    The real branch gets no gradient: the VGG is frozen and the photo is data. Equal-sized images make
    the global mean equal to the mean of per-image means.
    """
    real = jax.lax.stop_gradient(real_features.astype(jnp.float32))
    return jnp.mean(jnp.square(fake_features.astype(jnp.float32) - real))
