"""StyleGAN2 generator and discriminator, rosinality style (docs/reference.md §3.1-3.2), in Flax on NHWC arrays.

Parameter names mirror the PyTorch state-dict keys: an integer key segment is joined to the segment
before it with `_` and `weight` becomes `kernel` (the layout changes), e.g.

    style.3.weight (512, 512)               -> style_3/kernel        (in, out)
    convs.4.conv.weight (1, O, I, 3, 3)     -> convs_4/conv/kernel   (3, 3, I, O)
    convs.4.conv.modulation.bias            -> convs_4/conv/modulation/bias
    convs.4.noise.weight (1,)               -> convs_4/noise/weight  (1,)
    to_rgbs.2.bias (1, 3, 1, 1)             -> to_rgbs_2/bias        (3,)
    input.input (1, C, 4, 4)                -> input/input           (1, 4, 4, C)
    noises.noise_5 (1, 1, R, R)             -> collection "noises": noise_5 (1, R, R, 1)
    D: convs.1.conv2.1.weight (O, I, 3, 3)  -> convs_1/conv2_1/kernel (3, 3, I, O)

Stored parameters are the raw ("equalised learning rate") values: the runtime scales
(`1/sqrt(fan_in)`, `lr_mul`) are applied in the forward pass, exactly as in PyTorch, so optimiser
updates on these parameters match the official training. Fixed blur kernels are not parameters.

Random inputs come from Flax RNG streams: `noise` (per-layer noise when `randomize_noise=True`) and
`mixing` (style-mixing crossover when two styles are given without `inject_index`).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scenimefy_jax.models.layers import conv2d
from scenimefy_jax.models.upfirdn import make_kernel, upfirdn2d

BLUR_KERNEL = (1, 3, 3, 1)
_DN = ("NHWC", "HWIO", "NHWC")
_SQRT2 = math.sqrt(2.0)
CONV_IMPLS = ("batched", "grouped", "vmap")


def default_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """Channels per resolution of rosinality's Generator/Discriminator."""
    cm = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm, 1024: 16 * cm}


def _channel_table(channels, channel_multiplier: int) -> dict[int, int]:
    if channels is None:
        return default_channels(channel_multiplier)
    return {int(k): int(v) for k, v in (channels.items() if isinstance(channels, Mapping) else channels)}


def channels_field(channels: Mapping[int, int] | None) -> tuple[tuple[int, int], ...] | None:
    """A channel dict as the hashable tuple the module fields take (`{4: 32, 8: 16}` -> ((4, 32), (8, 16)))."""
    return None if channels is None else tuple(sorted((int(k), int(v)) for k, v in channels.items()))


def fused_leaky_relu(x: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """`sqrt(2) * leaky_relu(x + bias, 0.2)`, bias per channel (last axis)."""
    if bias is not None:
        x = x + bias
    return jnp.where(x >= 0, x, 0.2 * x) * _SQRT2


def _normal(stddev: float = 1.0):
    def init(key, shape, dtype=jnp.float32):
        return stddev * jax.random.normal(key, shape, dtype)

    return init


class PixelNorm(nn.Module):
    """`x * rsqrt(mean(x^2) + 1e-8)` over the last axis (`style.0` in PyTorch; no parameters)."""

    @nn.compact
    def __call__(self, x):
        return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + 1e-8)


class EqualLinear(nn.Module):
    """Equalised linear layer: `y = x (W lr_mul / sqrt(in)) + b lr_mul`, optional fused leaky ReLU."""

    features: int
    lr_mul: float = 1.0
    bias_init: float = 0.0
    activation: bool = False

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        kernel = self.param("kernel", _normal(1.0 / self.lr_mul), (fan_in, self.features))
        bias = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,))
        y = x @ (kernel * (self.lr_mul / math.sqrt(fan_in)))
        if self.activation:
            return fused_leaky_relu(y, bias * self.lr_mul)
        return y + bias * self.lr_mul


class EqualConv2d(nn.Module):
    """Equalised conv: weight `W / sqrt(in k^2)`; `padding` int (both sides) and `stride`."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        k, c = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", _normal(), (k, k, c, self.features))
        y = conv2d(x, kernel * (1.0 / math.sqrt(c * k * k)), [(self.padding, self.padding)] * 2, _wgrad(),
                   stride=self.stride)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


class FusedLeakyReLU(nn.Module):
    """`sqrt(2) * leaky_relu(x + bias, 0.2)` with a learned per-channel bias (`activate.bias`)."""

    @nn.compact
    def __call__(self, x):
        return fused_leaky_relu(x, self.param("bias", nn.initializers.zeros, (x.shape[-1],)))


def _wgrad() -> str:
    """Every StyleGAN2 convolution takes `conv2d`'s GEMM kernel gradient on CPU, the 3-channel ones
    too: XLA:CPU's own kernel gradient of a transposed (lhs-dilated) convolution is ~70x slower
    (13 s vs 0.18 s for 512->512 at 32->64 px), and under R1's `lax.cond` its second-order
    convolutions stay in a slow non-canonical form (an R1 step of the 64 px D: 114 s vs 3.2 s)."""
    return "gemm" if jax.default_backend() == "cpu" else "xla"


def _conv(x, w, padding, lhs_dilation=(1, 1), groups=1):
    if groups == 1:
        return conv2d(x, w, padding, _wgrad(), lhs_dilation=lhs_dilation)
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), padding, lhs_dilation=lhs_dilation, dimension_numbers=_DN, feature_group_count=groups
    )


class ModulatedConv2d(nn.Module):
    """Modulated (and optionally demodulated) conv, plain or 2x upsampling (docs/reference.md §3.1).

    `__call__(x [B, H, W, C_in], w [B, style_dim]) -> [B, H', W', C_out]` with H' = H, or 2H when
    `upsample` (transposed conv stride 2, padding 0 -> 2H+1, then Blur(kernel*4, pad (1, 1)) -> 2H).

    `impl` selects how the per-sample weights are applied; all three compute the same function:
      * "batched": scale the input channels by the style, one ordinary batched conv with the shared
        weight, then multiply each output channel by the demodulation factor (the conv is linear, so
        `conv(x * s, W) * d == conv(x, W * s * d)`); fastest on CPU (see benchmarks/stylegan2_cpu.json).
      * "grouped": the official fused path: per-sample weights, batch folded into channels, one grouped
        conv (`feature_group_count=B`).
      * "vmap": per-sample weights, `vmap` of an ordinary conv over the batch.
    """

    features: int
    kernel_size: int
    demodulate: bool = True
    upsample: bool = False
    blur_kernel: Sequence[int] = BLUR_KERNEL
    impl: str = "batched"

    @nn.compact
    def __call__(self, x, w):
        if self.impl not in CONV_IMPLS:
            raise ValueError(f"ModulatedConv2d.impl must be one of {CONV_IMPLS}, got {self.impl!r}")
        b, c, k, o = x.shape[0], x.shape[-1], self.kernel_size, self.features
        kernel = self.param("kernel", _normal(), (k, k, c, o))
        style = EqualLinear(c, bias_init=1.0, name="modulation")(w)  # [B, C_in]
        weight = kernel * (1.0 / math.sqrt(c * k * k))

        if self.upsample:
            # conv_transpose2d(stride 2, padding 0) == zero-insertion (lhs_dilation 2), pad k-1, flipped kernel.
            padding = [(k - 1, k - 1)] * 2
            lhs_dilation = (2, 2)
            weight = weight[::-1, ::-1]
        else:
            padding = [(k // 2, k // 2)] * 2
            lhs_dilation = (1, 1)

        if self.impl == "batched":
            y = _conv(x * style[:, None, None, :], weight, padding, lhs_dilation)
            if self.demodulate:
                # sum_{i,kh,kw} (W[kh,kw,i,o] s_i)^2 = sum_i s_i^2 sum_{kh,kw} W^2.
                demod = jax.lax.rsqrt(jnp.square(style) @ jnp.sum(jnp.square(weight), axis=(0, 1)) + 1e-8)
                y = y * demod[:, None, None, :]
        else:
            wb = weight[None] * style[:, None, None, :, None]  # [B, k, k, C_in, C_out]
            if self.demodulate:
                wb = wb * jax.lax.rsqrt(jnp.sum(jnp.square(wb), axis=(1, 2, 3), keepdims=True) + 1e-8)
            if self.impl == "grouped":
                h, wd = x.shape[1:3]
                xg = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, h, wd, b * c)
                wg = jnp.transpose(wb, (1, 2, 3, 0, 4)).reshape(k, k, c, b * o)
                y = _conv(xg, wg, padding, lhs_dilation, groups=b)
                y = jnp.transpose(y.reshape(y.shape[1], y.shape[2], b, o), (2, 0, 1, 3))
            else:
                y = jax.vmap(lambda xi, wi: _conv(xi[None], wi, padding, lhs_dilation)[0])(x, wb)

        if self.upsample:
            factor = 2
            p = (len(self.blur_kernel) - factor) - (k - 1)
            pad = ((p + 1) // 2 + factor - 1, p // 2 + 1)
            y = upfirdn2d(y, make_kernel(self.blur_kernel) * factor**2, pad=pad)
        return y


class NoiseInjection(nn.Module):
    """`x + weight * noise`; scalar weight (zero-initialised), noise `[B or 1, H, W, 1]`."""

    @nn.compact
    def __call__(self, x, noise):
        weight = self.param("weight", nn.initializers.zeros, (1,))
        return x + weight * noise


class StyledConv(nn.Module):
    """ModulatedConv2d -> NoiseInjection -> FusedLeakyReLU (rosinality StyledConv)."""

    features: int
    kernel_size: int = 3
    upsample: bool = False
    blur_kernel: Sequence[int] = BLUR_KERNEL
    impl: str = "batched"

    @nn.compact
    def __call__(self, x, w, noise):
        x = ModulatedConv2d(
            self.features, self.kernel_size, upsample=self.upsample, blur_kernel=self.blur_kernel, impl=self.impl,
            name="conv",
        )(x, w)
        x = NoiseInjection(name="noise")(x, noise)
        return FusedLeakyReLU(name="activate")(x)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation + bias; adds the 2x-upsampled skip when given."""

    blur_kernel: Sequence[int] = BLUR_KERNEL
    impl: str = "batched"

    @nn.compact
    def __call__(self, x, w, skip=None):
        out = ModulatedConv2d(3, 1, demodulate=False, impl=self.impl, name="conv")(x, w)
        out = out + self.param("bias", nn.initializers.zeros, (3,))
        if skip is not None:
            # rosinality Upsample: upfirdn2d(up=2, kernel*4, pad=((p+1)//2 + 1, p//2)), p = k - 2.
            p = len(self.blur_kernel) - 2
            out = out + upfirdn2d(skip, make_kernel(self.blur_kernel) * 4, up=2, pad=((p + 1) // 2 + 1, p // 2))
        return out


class Generator(nn.Module):
    """rosinality StyleGAN2 generator (docs/reference.md §3.1). Output `[B, size, size, 3]`, unclamped, ~[-1, 1].

    `channels` (a tuple of `(resolution, channels)` pairs, see `channels_field`) overrides the table
    derived from `channel_multiplier`, which lets tests build a small network of the same topology.
    """

    size: int = 256
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    lr_mlp: float = 0.01
    blur_kernel: Sequence[int] = BLUR_KERNEL
    channels: tuple[tuple[int, int], ...] | None = None
    conv_impl: str = "batched"

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def num_layers(self) -> int:
        """Number of noise inputs (13 for 256)."""
        return (self.log_size - 2) * 2 + 1

    @property
    def n_latent(self) -> int:
        """Number of per-layer w's (14 for 256)."""
        return self.log_size * 2 - 2

    def noise_shapes(self) -> list[tuple[int, int, int, int]]:
        return [(1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), 1) for i in range(self.num_layers)]

    def setup(self):
        if 2**self.log_size != self.size or self.size < 8:
            raise ValueError(f"Generator.size must be a power of two >= 8, got {self.size}")
        ch = _channel_table(self.channels, self.channel_multiplier)
        # List attributes are auto-named `style_0..`; index 0 is the parameterless PixelNorm, so the
        # EqualLinears are `style_1..style_n_mlp` exactly like the PyTorch Sequential.
        self.style = [PixelNorm()] + [
            EqualLinear(self.style_dim, lr_mul=self.lr_mlp, activation=True) for _ in range(self.n_mlp)
        ]
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], 3, blur_kernel=self.blur_kernel, impl=self.conv_impl)
        self.to_rgb1 = ToRGB(self.blur_kernel, impl=self.conv_impl)
        convs, to_rgbs = [], []
        for i in range(3, self.log_size + 1):
            out_ch = ch[2**i]
            convs.append(StyledConv(out_ch, 3, upsample=True, blur_kernel=self.blur_kernel, impl=self.conv_impl))
            convs.append(StyledConv(out_ch, 3, blur_kernel=self.blur_kernel, impl=self.conv_impl))
            to_rgbs.append(ToRGB(self.blur_kernel, impl=self.conv_impl))
        self.convs = convs
        self.to_rgbs = to_rgbs
        # Stored noise buffers (rosinality `noises.noise_i`), used when randomize_noise=False.
        self.noises = [
            self.variable("noises", f"noise_{i}", lambda s=s: jax.random.normal(self.make_rng("params"), s))
            for i, s in enumerate(self.noise_shapes())
        ]

    def mapping(self, z: jax.Array) -> jax.Array:
        """z `[B, style_dim]` -> w `[B, style_dim]` (PixelNorm + n_mlp EqualLinear with lr_mul)."""
        for layer in self.style:
            z = layer(z)
        return z

    # rosinality calls the mapping network `style`; keep both names.
    def get_style(self, z):
        return self.mapping(z)

    def mean_latent(self, key: jax.Array, n: int) -> jax.Array:
        """Mean of `mapping(z)` over `n` z ~ N(0, I): the truncation centre w_avg, `[1, style_dim]`."""
        z = jax.random.normal(key, (n, self.style_dim))
        return jnp.mean(self.mapping(z), axis=0, keepdims=True)

    def fixed_noise(self) -> list[jax.Array]:
        """The stored noise buffers `[1, R, R, 1]`, coarse to fine."""
        return [v.value for v in self.noises]

    def random_noise(self, batch: int) -> list[jax.Array]:
        """Fresh N(0, 1) noise `[B, R, R, 1]` per layer from the `noise` RNG stream."""
        key = self.make_rng("noise")
        keys = jax.random.split(key, self.num_layers)
        return [jax.random.normal(k, (batch,) + s[1:]) for k, s in zip(keys, self.noise_shapes())]

    def synthesis(self, latent: jax.Array, noise: Sequence[jax.Array] | None = None, randomize_noise: bool = True):
        """Per-layer w's `[B, n_latent, style_dim]` -> image `[B, size, size, 3]`.

        `noise`: a list of `num_layers` arrays `[B or 1, R, R, 1]`; if None, random noise (`noise` RNG)
        when `randomize_noise`, else the stored buffers.
        """
        b = latent.shape[0]
        if noise is None:
            noise = self.random_noise(b) if randomize_noise else self.fixed_noise()
        if len(noise) != self.num_layers:
            raise ValueError(f"synthesis needs {self.num_layers} noise arrays, got {len(noise)}")
        out = self.input(b)
        out = self.conv1(out, latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for m, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * m](out, latent[:, i], noise[2 * m + 1])
            out = self.convs[2 * m + 1](out, latent[:, i + 1], noise[2 * m + 2])
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip

    def __call__(
        self,
        styles,
        *,
        input_is_latent: bool = False,
        truncation: float = 1.0,
        truncation_latent: jax.Array | None = None,
        inject_index: int | jax.Array | None = None,
        noise: Sequence[jax.Array] | None = None,
        randomize_noise: bool = True,
        return_latents: bool = False,
    ):
        """rosinality `Generator.forward`: `styles` is a list of one or two `[B, style_dim]` arrays
        (z's, or w's with `input_is_latent=True`), or a `[B, n_latent, style_dim]` latent array.

        Truncation `w' = w_avg + psi (w - w_avg)` is applied to each style before broadcasting. With two
        styles, layers `< inject_index` take the first and the rest the second; without `inject_index`
        the crossover is drawn uniformly from [1, n_latent - 1] (`mixing` RNG), one per batch as in PyTorch.
        Returns the image `[B, size, size, 3]` (and the latents `[B, n_latent, D]` if `return_latents`).
        """
        if isinstance(styles, (jax.Array, np.ndarray)):
            styles = [styles]
        styles = list(styles)
        if not input_is_latent:
            styles = [self.mapping(s) if s.ndim == 2 else s for s in styles]
        if not (isinstance(truncation, (int, float)) and truncation >= 1):
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (w_avg, see mean_latent)")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        n = self.n_latent
        if len(styles) == 1:
            s = styles[0]
            latent = s if s.ndim == 3 else jnp.broadcast_to(s[:, None, :], (s.shape[0], n, s.shape[-1]))
        elif len(styles) == 2:
            if inject_index is None:
                inject_index = jax.random.randint(self.make_rng("mixing"), (), 1, n)
            layer = jnp.arange(n)[None, :, None]
            latent = jnp.where(layer < inject_index, styles[0][:, None, :], styles[1][:, None, :])
        else:
            raise ValueError(f"Generator takes one or two styles, got {len(styles)}")
        image = self.synthesis(latent, noise=noise, randomize_noise=randomize_noise)
        return (image, latent) if return_latents else image


class ConstantInput(nn.Module):
    """Learned constant `input/input` `[1, 4, 4, C]`, tiled over the batch."""

    channels: int
    size: int = 4

    @nn.compact
    def __call__(self, batch: int):
        const = self.param("input", _normal(), (1, self.size, self.size, self.channels))
        return jnp.broadcast_to(const, (batch,) + const.shape[1:])


def _blur_pad(blur_kernel, kernel_size: int) -> tuple[int, int]:
    # rosinality ConvLayer(downsample=True): p = (len(k) - 2) + (kernel_size - 1), pad ((p+1)//2, p//2).
    p = (len(blur_kernel) - 2) + (kernel_size - 1)
    return ((p + 1) // 2, p // 2)


class ResBlock(nn.Module):
    """Discriminator residual block: (conv1 -> blur+stride-2 conv2, blur+stride-2 1x1 skip) / sqrt(2)."""

    features: int
    blur_kernel: Sequence[int] = BLUR_KERNEL

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        kern = make_kernel(self.blur_kernel)
        out = EqualConv2d(c, 3, padding=1, use_bias=False, name="conv1_0")(x)
        out = FusedLeakyReLU(name="conv1_1")(out)
        out = upfirdn2d(out, kern, pad=_blur_pad(self.blur_kernel, 3))  # conv2.0 (Blur)
        out = EqualConv2d(self.features, 3, stride=2, use_bias=False, name="conv2_1")(out)
        out = FusedLeakyReLU(name="conv2_2")(out)
        skip = upfirdn2d(x, kern, pad=_blur_pad(self.blur_kernel, 1))  # skip.0 (Blur)
        skip = EqualConv2d(self.features, 1, stride=2, use_bias=False, name="skip_1")(skip)
        return (out + skip) * (1.0 / _SQRT2)


def minibatch_stddev(x: jax.Array, group_size: int = 4) -> jax.Array:
    """Appends rosinality's minibatch-stddev feature: `[B, H, W, C] -> [B, H, W, C + 1]`.

    Group G = min(B, 4); sample n is grouped with samples n mod (B/G) (PyTorch `view(G, -1, ...)`),
    std over the group (population variance + 1e-8), averaged over (H, W, C).
    """
    b, h, w, c = x.shape
    g = min(b, group_size)
    if b % g:
        raise ValueError(f"minibatch stddev needs a batch divisible by {g}, got {b}")
    y = x.reshape(g, b // g, h, w, c)
    std = jnp.sqrt(jnp.var(y, axis=0) + 1e-8)  # [B/G, H, W, C]
    std = jnp.mean(std, axis=(1, 2, 3))  # [B/G]
    std = jnp.tile(std, g)  # sample n -> subgroup n mod B/G
    return jnp.concatenate([x, jnp.broadcast_to(std[:, None, None, None], (b, h, w, 1))], axis=-1)


class Discriminator(nn.Module):
    """rosinality StyleGAN2 discriminator (docs/reference.md §3.2): `[B, size, size, 3] -> logits [B, 1]`."""

    size: int = 256
    channel_multiplier: int = 2
    blur_kernel: Sequence[int] = BLUR_KERNEL
    channels: tuple[tuple[int, int], ...] | None = None

    @nn.compact
    def __call__(self, x):
        ch = _channel_table(self.channels, self.channel_multiplier)
        log_size = int(math.log2(self.size))
        out = EqualConv2d(ch[self.size], 1, use_bias=False, name="convs_0_0")(x)
        out = FusedLeakyReLU(name="convs_0_1")(out)
        for j, i in enumerate(range(log_size, 2, -1), start=1):
            out = ResBlock(ch[2 ** (i - 1)], self.blur_kernel, name=f"convs_{j}")(out)
        out = minibatch_stddev(out)
        out = EqualConv2d(ch[4], 3, padding=1, use_bias=False, name="final_conv_0")(out)
        out = FusedLeakyReLU(name="final_conv_1")(out)
        # Flatten in PyTorch's (C, H, W) order so `final_linear.0.weight` keeps its layout.
        out = jnp.transpose(out, (0, 3, 1, 2)).reshape(out.shape[0], -1)
        out = EqualLinear(ch[4], activation=True, name="final_linear_0")(out)
        return EqualLinear(1, name="final_linear_1")(out)


def init_generator(model: Generator, key: jax.Array) -> dict:
    """Random variables `{"params", "noises"}` of `model` (for tests and training from scratch)."""
    z = jnp.zeros((1, model.style_dim))
    return model.init({"params": key, "noise": key}, [z])


def count_params(params) -> int:
    return int(sum(np.prod(np.shape(p)) for p in jax.tree_util.tree_leaves(params)))
