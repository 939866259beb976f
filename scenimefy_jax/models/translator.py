"""The photo-to-anime translator: CUT's `ResnetGenerator` (resnet_9blocks), docs/reference.md §1.

Parameter names mirror the PyTorch state dict (`model.8.weight` -> `model_8/kernel`,
`model.12.conv_block.5.bias` -> `model_12/conv_block_5/bias`), so the converter is a rename plus a
transpose and a reader of either side can find the other.

The official forward is a walk over `nn.Sequential` indices 0..31 that can record the output of
chosen indices (the `nce_layers` taps used by PatchNCE/SRC, docs/reference.md §1.6). `ResnetGenerator` keeps that
walk explicit, so a tap index here means exactly what it means in the official code.

For video, `ResnetGenerator(..., norm_stats=..., smoothing=...)` normalises every InstanceNorm layer
with an exponential moving average of its per-channel statistics over frames instead of the frame's
own (docs/video.md); without those arguments the forward is the official one, unchanged.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from scenimefy_jax.models.layers import Conv, blur_downsample, blur_upsample, instance_norm, reflect_pad

NCE_LAYERS = (0, 4, 8, 12, 16)
"""The official `--nce_layers 0,4,8,12,16`: padded input, two pre-norm convs, resblocks 1 and 5."""

LAST_ENCODER_LAYER = 16

NormStats = list  # [(mean, var), ...]: one pair per InstanceNorm layer in forward order, each [B, 1, 1, C] float32


class SmoothedInstanceNorm:
    """InstanceNorm2d(affine=False) whose statistics are blended with those of the previous frame.

    Each call is the next InstanceNorm layer of the forward (the generator calls them in a fixed
    order). It takes the layer input's own per-sample, per-channel mean and biased variance in
    float32 (as `layers.instance_norm` does), blends them as `smoothing * previous + (1 - smoothing)
    * own`, normalises with the blend and records it in `used`, the state to pass with the next frame.
    With no `previous` (`()`) the own statistics are used, and recorded, unchanged.
    """

    def __init__(self, previous: NormStats | tuple, smoothing: Union[float, jax.Array], eps: float = 1e-5):
        self.previous = list(previous)
        self.smoothing = smoothing
        self.eps = eps
        self.used: NormStats = []

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True)
        if self.previous:
            if len(self.used) >= len(self.previous):
                raise ValueError(f"norm_stats holds {len(self.previous)} layers; the generator has more")
            prev_mean, prev_var = self.previous[len(self.used)]
            a = jnp.asarray(self.smoothing, jnp.float32)
            mean = a * prev_mean + (1 - a) * mean
            var = a * prev_var + (1 - a) * var
        self.used.append((mean, var))
        return ((x32 - mean) * jax.lax.rsqrt(var + self.eps)).astype(x.dtype)


class ResnetBlock(nn.Module):
    """`x + [reflect-pad, conv3x3, IN, ReLU, reflect-pad, conv3x3, IN](x)` (docs/reference.md §1.4)."""

    dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, norm: Callable[[jax.Array], jax.Array] = instance_norm) -> jax.Array:
        h = Conv(self.dim, 3, dtype=self.dtype, name="conv_block_1")(reflect_pad(x, 1))
        h = nn.relu(norm(h))
        h = Conv(self.dim, 3, dtype=self.dtype, name="conv_block_5")(reflect_pad(h, 1))
        return x + norm(h)


class ResnetGenerator(nn.Module):
    """CUT `ResnetGenerator(3, 3, ngf=64, norm=instance, no_dropout, n_blocks=9)`, anti-aliased.

    Input and output are `[B, H, W, 3]` in [-1, 1] (H, W multiples of 4, see
    `scenimefy_jax.data.images.round_to_base4`). `dtype` is the compute dtype; parameters stay
    float32 and InstanceNorm statistics are always taken in float32.
    """

    ngf: int = 64
    n_blocks: int = 9
    output_nc: int = 3
    dtype: jnp.dtype = jnp.float32

    def _modules(self, norm: Callable[[jax.Array], jax.Array] = instance_norm) -> list[Callable[[jax.Array], jax.Array]]:
        """The official `nn.Sequential`, one callable per PyTorch module index; `norm` is every InstanceNorm."""
        ngf, dt, n = self.ngf, self.dtype, self.n_blocks
        up = 12 + n  # index of the first Upsample: 21 for nine blocks

        def pad3(x):
            return reflect_pad(x, 3)

        layers: list[Callable[[jax.Array], jax.Array]] = [
            pad3,  # 0
            Conv(ngf, 7, dtype=dt, name="model_1"),
            norm,  # 2
            nn.relu,  # 3
            Conv(ngf * 2, 3, padding=1, dtype=dt, name="model_4"),
            norm,  # 5
            nn.relu,  # 6
            blur_downsample,  # 7
            Conv(ngf * 4, 3, padding=1, dtype=dt, name="model_8"),
            norm,  # 9
            nn.relu,  # 10
            blur_downsample,  # 11
        ]
        blocks = [ResnetBlock(ngf * 4, dtype=dt, name=f"model_{12 + i}") for i in range(n)]
        layers += [functools.partial(block, norm=norm) for block in blocks]
        layers += [
            blur_upsample,  # 21
            Conv(ngf * 2, 3, padding=1, dtype=dt, name=f"model_{up + 1}"),
            norm,  # 23
            nn.relu,  # 24
            blur_upsample,  # 25
            Conv(ngf, 3, padding=1, dtype=dt, name=f"model_{up + 5}"),
            norm,  # 27
            nn.relu,  # 28
            pad3,  # 29
            Conv(self.output_nc, 7, dtype=dt, name=f"model_{up + 9}"),
            jnp.tanh,  # 31
        ]
        return layers

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        nce_layers: Sequence[int] = (),
        encode_only: bool = False,
        *,
        norm_stats: NormStats | tuple | None = None,
        smoothing: Union[float, jax.Array] = 0.0,
    ):
        """Translate `x` `[B, H, W, 3]`.

        Returns the image `[B, H, W, 3]`; with `nce_layers`, `(image, taps)` where `taps` is the
        list of module outputs at those indices (NHWC, in the order given); with
        `encode_only=True`, only the taps, stopping after the last requested index as the
        official `encode_only` path does.

        `norm_stats` (video smoothing, off when None): the InstanceNorm statistics used for the
        previous frame (`NormStats`, as returned here), or `()` for none yet. Every InstanceNorm layer
        then normalises with `smoothing * previous + (1 - smoothing) * own` (`SmoothedInstanceNorm`)
        and the call returns `(image, stats_used)`, the state for the next frame. `smoothing` 0 gives
        the frame's own statistics, so the image equals the plain forward up to float rounding.
        """
        wanted = sorted(set(nce_layers))
        if encode_only and not wanted:
            raise ValueError("encode_only=True needs at least one nce layer")
        smoothed = None
        if norm_stats is not None:
            if wanted:
                raise ValueError("norm_stats (video smoothing) cannot be combined with nce_layers")
            smoothed = SmoothedInstanceNorm(norm_stats, smoothing)
        taps: dict[int, jax.Array] = {}
        h = x.astype(self.dtype)
        for index, module in enumerate(self._modules() if smoothed is None else self._modules(smoothed)):
            h = module(h)
            if index in wanted:
                taps[index] = h
            if encode_only and index == wanted[-1]:
                return [taps[i] for i in nce_layers]
        image = h.astype(jnp.float32)
        if smoothed is not None:
            return image, smoothed.used
        if wanted:
            return image, [taps[i] for i in nce_layers]
        return image

    def encode(self, x: jax.Array, nce_layers: Sequence[int] = NCE_LAYERS) -> list[jax.Array]:
        """The official `G(x, nce_layers, encode_only=True)`: the encoder taps only."""
        return self(x, nce_layers, encode_only=True)


def pytorch_module_count(n_blocks: int = 9) -> int:
    """Number of modules in the official Sequential (32 for nine blocks)."""
    return 23 + n_blocks
