"""Losses of semi-supervised translation (docs/reference.md §2.6-2.7) as plain functions of arrays.

* `gan`: LSGAN for D, D_p and the generator.
* `contrastive`: PatchNCE / StylePatchNCE, hard-negative weights, hDCE, SRC.
* `content`: the optional VGG19 content loss.
* `objective`: the per-layer sums and the total generator objective with the supervised weight.
"""
from scenimefy_jax.losses.content import vgg_content_loss
from scenimefy_jax.losses.contrastive import (
    hard_negative_weights,
    hdce_loss,
    patch_nce_loss,
    src_loss,
)
from scenimefy_jax.losses.gan import discriminator_loss, generator_gan_loss, lsgan_loss

__all__ = [
    "discriminator_loss",
    "generator_gan_loss",
    "hard_negative_weights",
    "hdce_loss",
    "lsgan_loss",
    "patch_nce_loss",
    "src_loss",
    "vgg_content_loss",
]
