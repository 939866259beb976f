"""The PatchGAN discriminators D (3-channel) and D_p (6-channel, conditional): docs/reference.md §2.3.

Both are the official `NLayerDiscriminator(input_nc, ndf=64, n_layers=3, norm=instance)` with
anti-aliasing on (`no_antialias=False`): every stride-2 convolution of the original pix2pix PatchGAN is
replaced by a stride-1 4x4 convolution followed by the blur `Downsample`. For a 256x256 input the
output is a 30x30 map of patch scores.

Parameter names mirror the PyTorch state dict (`model.0.weight` -> `model_0/kernel`,
`model.14.bias` -> `model_14/bias`); the `filt` buffers of the three Downsample modules are the
fixed stencil `blur_downsample` and have no parameters.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from scenimefy_jax.models.layers import Conv, blur_downsample, instance_norm


def _leaky_relu(x: jax.Array) -> jax.Array:
    return nn.leaky_relu(x, negative_slope=0.2)


class PatchGANDiscriminator(nn.Module):
    """`[B, H, W, C_in]` (C_in = 3 for D, 6 for D_p: photo channels first) -> `[B, H', W', 1]`.

    H' = 30 for H = 256 (each 4x4 conv with zero padding 1 shrinks by one, each Downsample halves
    with ceil). `dtype` is the compute dtype; parameters are float32 and the output is float32.
    """

    ndf: int = 64
    n_layers: int = 3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.dtype
        # index 0..2: conv (no norm), LeakyReLU, Downsample
        h = Conv(self.ndf, 4, padding=1, dtype=dt, name="model_0")(x.astype(dt))
        h = blur_downsample(_leaky_relu(h))
        index = 3
        for n in range(1, self.n_layers):
            # index i..i+3: conv, InstanceNorm, LeakyReLU, Downsample
            features = self.ndf * min(2**n, 8)
            h = Conv(features, 4, padding=1, dtype=dt, name=f"model_{index}")(h)
            h = blur_downsample(_leaky_relu(instance_norm(h)))
            index += 4
        # stride-1 block without Downsample, then the 1-channel score conv
        features = self.ndf * min(2**self.n_layers, 8)
        h = Conv(features, 4, padding=1, dtype=dt, name=f"model_{index}")(h)
        h = _leaky_relu(instance_norm(h))
        h = Conv(1, 4, padding=1, dtype=dt, name=f"model_{index + 3}")(h)
        return h.astype(jnp.float32)


def conv_indices(n_layers: int = 3) -> list[int]:
    """PyTorch `model.<i>` indices of the convolutions: [0, 3, 7, 11, 14] for three layers."""
    return [0] + [3 + 4 * (n - 1) for n in range(1, n_layers)] + [4 * n_layers - 1, 4 * n_layers + 2]
