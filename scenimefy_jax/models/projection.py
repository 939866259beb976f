"""Patch sampling and the projection heads F / F_s (the official `PatchSampleF`, docs/reference.md §2.3).

The official module builds its MLPs lazily at the first call; here they are created eagerly from the
known tap channel counts (3, 128, 256, 256, 256 for ngf = 64), with the same xavier/0.02 init.

Patch positions are drawn by `sample_patch_ids`, a pure function of a PRNG key, and passed to the
projector explicitly: this keeps randomness out of the module, makes the positions injectable (parity
tests give PyTorch and JAX the same ones), and lets one draw serve the query and key features as the
official code does (ids drawn once, then reused).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from scenimefy_jax.models.layers import xavier_normal

NORM_EPS = 1e-7
"""The official `Normalize`: `v / (||v||_2 + 1e-7)`."""


def tap_channels(ngf: int = 64) -> tuple[int, ...]:
    """Channels of the generator taps at nce layers 0, 4, 8, 12, 16."""
    return (3, 2 * ngf, 4 * ngf, 4 * ngf, 4 * ngf)


def l2_normalize(v: jax.Array, axis: int = -1) -> jax.Array:
    """`v / (||v|| + 1e-7)` along `axis`, as the official `Normalize(power=2)`.

    The official `x.pow(2).sum().pow(0.5)` has an infinite derivative at an all-zero vector (a patch
    whose ReLU features are all dead), and inf * 0 makes the whole gradient NaN. Here the square root
    only sees positive sums: the same value and gradient wherever the official ones are finite, and at
    a zero vector the norm is 0 with the finite gradient `1 / 1e-7` of `v / 1e-7`.
    """
    squared = jnp.sum(jnp.square(v), axis=axis, keepdims=True)
    positive = squared > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)
    return v / (norm + NORM_EPS)


def sample_patch_ids(
    rng: jax.Array,
    spatial_sizes: Sequence[tuple[int, int]],
    num_patches: int = 256,
    batch_size: int | None = None,
) -> list[jax.Array]:
    """Random patch positions per tap, without replacement.

    For each `(H, W)` in `spatial_sizes`, positions index the row-major flattened `H*W` grid (as the
    official `feat.permute(0, 2, 3, 1).flatten(1, 2)`); `min(num_patches, H*W)` of them are taken
    from a uniform random permutation. With `batch_size=None` one set is shared by every image
    (official, docs/reference.md §2.10 Q9) and each array is `[P]`; otherwise each image gets its own set, `[B, P]`.
    """
    keys = jax.random.split(rng, len(spatial_sizes))
    ids = []
    for key, (h, w) in zip(keys, spatial_sizes):
        n = h * w
        p = min(num_patches, n)
        if batch_size is None:
            ids.append(jax.random.permutation(key, n)[:p].astype(jnp.int32))
        else:
            per_image = jax.random.split(key, batch_size)
            ids.append(jax.vmap(lambda k: jax.random.permutation(k, n)[:p])(per_image).astype(jnp.int32))
    return ids


def gather_patches(feature: jax.Array, ids: jax.Array) -> jax.Array:
    """`[B, H, W, C]` at positions `[P]` (shared) or `[B, P]` (per image) -> `[B, P, C]`."""
    b, h, w, c = feature.shape
    flat = feature.reshape(b, h * w, c)
    if ids.ndim == 1:
        return jnp.take(flat, ids, axis=1)
    return jnp.take_along_axis(flat, ids[:, :, None], axis=1)


class PatchProjector(nn.Module):
    """`PatchSampleF(use_mlp=True, nc=256)`: per tap a Linear-ReLU-Linear head, then L2-normalise.

    Parameters mirror the state dict: `mlp_k.0.weight` -> `mlp_k_0/kernel`, `mlp_k.2.bias` ->
    `mlp_k_2/bias`, k = 0..len(channels)-1. Computation is float32 (the heads are tiny).
    """

    channels: Sequence[int] = (3, 128, 256, 256, 256)
    nc: int = 256

    def setup(self):
        self.heads = [
            (
                nn.Dense(self.nc, kernel_init=xavier_normal(), name=f"mlp_{k}_0"),
                nn.Dense(self.nc, kernel_init=xavier_normal(), name=f"mlp_{k}_2"),
            )
            for k in range(len(self.channels))
        ]

    def project(self, k: int, patches: jax.Array) -> jax.Array:
        """Head k on gathered patches `[..., C_k]` -> unit vectors `[..., nc]`."""
        if patches.shape[-1] != self.channels[k]:
            raise ValueError(f"tap {k} has {patches.shape[-1]} channels, the head expects {self.channels[k]}")
        first, second = self.heads[k]
        return l2_normalize(second(nn.relu(first(patches.astype(jnp.float32)))))

    def __call__(self, features: Sequence[jax.Array], patch_ids: Sequence[jax.Array]) -> list[jax.Array]:
        """Taps `[B, H_k, W_k, C_k]` and ids (`[P_k]` or `[B, P_k]`) -> list of `[B, P_k, nc]`."""
        if len(features) != len(self.channels) or len(patch_ids) != len(self.channels):
            raise ValueError(f"expected {len(self.channels)} taps and id sets")
        return [self.project(k, gather_patches(f, i)) for k, (f, i) in enumerate(zip(features, patch_ids))]
