"""VGG19 feature extractor in the torchvision layout (`torchvision.models.vgg19().features`).

Used by the optional content loss of the translator (docs/reference.md §2.3: `features[0..25]`, the output of
conv4_4 *before* its ReLU, inputs in [0, 1] without ImageNet mean/std) and by StyleGAN fine-tuning.
`last_layer` is the torchvision `features` index to stop after (inclusive), so any prefix of the
network can be built; `taps` records intermediate module outputs by index.

Parameter names mirror the state dict: `features.25.weight` -> `features_25/kernel`.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from scenimefy_jax.models.layers import Conv

VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
CONV4_4 = 25
"""torchvision index of conv4_4 (its ReLU is 26)."""


def vgg19_layers() -> list[tuple[str, int]]:
    """The 37 modules of `vgg19().features` as (kind, out_channels): kind in conv/relu/pool."""
    layers: list[tuple[str, int]] = []
    channels = 3
    for v in VGG19_CFG:
        if v == "M":
            layers.append(("pool", channels))
        else:
            layers += [("conv", int(v)), ("relu", int(v))]
            channels = int(v)
    return layers


def conv_shapes(last_layer: int | None = None) -> dict[int, tuple[int, int]]:
    """features index -> (out, in) channels of every conv up to `last_layer` (all 16 if None)."""
    shapes, channels = {}, 3
    for i, (kind, c) in enumerate(vgg19_layers()):
        if last_layer is not None and i > last_layer:
            break
        if kind == "conv":
            shapes[i] = (c, channels)
            channels = c
    return shapes


def trim_params(params: dict, last_layer: int) -> dict:
    """Keeps only the convs a `VGG19Features(last_layer)` uses (converted files hold all 16)."""
    return {f"features_{i}": params[f"features_{i}"] for i in conv_shapes(last_layer)}


class VGG19Features(nn.Module):
    """`[B, H, W, 3]` (whatever range the caller chose) -> output of `features[last_layer]`, NHWC."""

    last_layer: int = CONV4_4
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, taps: Sequence[int] = ()):
        """Returns the features; with `taps`, `(features, [outputs at those indices])`."""
        layers = vgg19_layers()
        if not 0 <= self.last_layer < len(layers):
            raise ValueError(f"last_layer must be in [0, {len(layers) - 1}], got {self.last_layer}")
        recorded = {}
        h = x.astype(self.dtype)
        for i, (kind, c) in enumerate(layers[: self.last_layer + 1]):
            if kind == "conv":
                h = Conv(c, 3, padding=1, dtype=self.dtype, name=f"features_{i}")(h)
            elif kind == "relu":
                h = nn.relu(h)
            else:  # MaxPool2d(2, 2): floor, no padding
                h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="VALID")
            if i in taps:
                recorded[i] = h.astype(jnp.float32)
        out = h.astype(jnp.float32)
        if taps:
            return out, [recorded[i] for i in taps]
        return out
