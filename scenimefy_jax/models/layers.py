"""Building blocks shared by the CUT-style networks (translator, PatchGAN).

All functions take NHWC arrays. The anti-aliased resampling filters of the official code
(`Downsample`/`Upsample` in Semi_translation/models/networks.py, docs/reference.md §1.3) are fixed, so they are
written here as explicit separable stencils instead of depthwise convolutions: same numbers, no
learned state, and cheaper than a grouped convolution on every backend.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scenimefy_jax.kernels import onednn



def xavier_normal(gain: float = 0.02) -> nn.initializers.Initializer:
    """CUT's `init_type=xavier`: N(0, gain * sqrt(2 / (fan_in + fan_out))) (docs/reference.md §2.4)."""
    return nn.initializers.variance_scaling(gain**2, "fan_avg", "normal")


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """InstanceNorm2d(affine=False): per sample and channel over H, W, biased variance.

    Statistics are taken in float32 whatever the compute dtype, so bfloat16 runs stay stable.
    """
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def _place(v: jax.Array, axis: int, low: int, high: int) -> jax.Array:
    """`v` with `low` and `high` zeros added along `axis` (one `lax.pad`, fused by XLA)."""
    widths = [(0, 0, 0)] * v.ndim
    widths[axis] = (low, high, 0)
    return jax.lax.pad(v, jnp.zeros((), v.dtype), widths)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def reflect_pad_axis(x: jax.Array, pad: int, axis: int) -> jax.Array:
    """Reflection padding by `pad` on both sides of one axis (`x[-k] = x[k]`, the edge not repeated).

    Its gradient folds each border strip back onto the samples it copied, in one fused pass. The
    transpose XLA derives from `jnp.pad(mode="reflect")` instead zero-pads every reversed strip to the
    full size and adds the pieces: several full-size passes, up to 3x slower on CPU (docs/performance.md)."""
    widths = [(0, 0)] * x.ndim
    widths[axis] = (pad, pad)
    return jnp.pad(x, widths, mode="reflect")


def _reflect_pad_axis_fwd(x, pad, axis):
    return reflect_pad_axis(x, pad, axis), None


def _reflect_pad_axis_bwd(pad, axis, _, g):
    n = g.shape[axis] - 2 * pad
    take = functools.partial(jax.lax.slice_in_dim, g, axis=axis)
    left = jax.lax.rev(take(0, pad), (axis,))  # left[m] was copied from x[m + 1]
    right = jax.lax.rev(take(pad + n, n + 2 * pad), (axis,))  # right[m] from x[n - 1 - pad + m]
    return (take(pad, pad + n) + _place(left, axis, 1, n - 1 - pad) + _place(right, axis, n - 1 - pad, 1),)


reflect_pad_axis.defvjp(_reflect_pad_axis_fwd, _reflect_pad_axis_bwd)


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
    """ReflectionPad2d(pad) on the two spatial axes of an NHWC array."""
    return reflect_pad_axis(reflect_pad_axis(x, pad, 1), pad, 2)


# The blur stencils below carry their own gradients, each one fused pass over the cotangent. The
# transposes XLA derives (strided slices become interior-padded copies, the edge padding a sum of
# zero-padded strips) take several full-size passes: 2-6x slower on CPU at the generator's shapes
# (docs/performance.md). Same sums, in another order: equal up to float32 rounding.

@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _blur_down_axis(x: jax.Array, axis: int) -> jax.Array:
    # y[i] = (x[2i-1] + 2 x[2i] + x[2i+1]) / 4 with reflection x[-1] = x[1], x[n] = x[n-2].
    n = x.shape[axis]
    m = (n + 1) // 2
    xp = reflect_pad_axis(x, 1, axis)
    take = functools.partial(jax.lax.slice_in_dim, xp, stride=2, axis=axis)
    left = take(0, 2 * m - 1)
    mid = take(1, 2 * m)
    right = take(2, 2 * m + 1)
    return (left + 2 * mid + right) * 0.25


def _blur_down_axis_fwd(x, axis):
    return _blur_down_axis(x, axis), x.shape[axis]


def _blur_down_axis_bwd(axis, n, g):
    # y[i] reads xp[2i], xp[2i+1], xp[2i+2] of the reflection-padded input (length n + 2): the even
    # samples xp[2k] get (g[k-1] + g[k]) / 4, the odd ones xp[2k+1] get g[k] / 2.
    m = g.shape[axis]
    take = functools.partial(jax.lax.slice_in_dim, _place(g, axis, 1, 1), axis=axis)
    even = (take(0, m + 1) + take(1, m + 2)) * 0.25
    odd = _place(g * 0.5, axis, 0, 1)
    shape = list(g.shape)
    shape[axis] = 2 * (m + 1)
    dxp = jnp.stack([even, odd], axis=axis + 1).reshape(shape)
    return _reflect_pad_axis_bwd(1, axis, None, jax.lax.slice_in_dim(dxp, 0, n + 2, axis=axis))


_blur_down_axis.defvjp(_blur_down_axis_fwd, _blur_down_axis_bwd)


def blur_downsample(x: jax.Array) -> jax.Array:
    """Official `Downsample(filt_size=3, reflect)`: [1,2,1]^2/16 blur, stride 2, out = ceil(n/2)."""
    return _blur_down_axis(_blur_down_axis(x, 1), 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _blur_up_axis(x: jax.Array, axis: int) -> jax.Array:
    # y[2i] = x[i-1]/4 + 3x[i]/4, y[2i+1] = 3x[i]/4 + x[i+1]/4, edges replicated.
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (1, 1)
    xp = jnp.pad(x, pad, mode="edge")
    prev = jax.lax.slice_in_dim(xp, 0, n, axis=axis)
    cur = jax.lax.slice_in_dim(xp, 1, n + 1, axis=axis)
    nxt = jax.lax.slice_in_dim(xp, 2, n + 2, axis=axis)
    even = 0.25 * prev + 0.75 * cur
    odd = 0.75 * cur + 0.25 * nxt
    y = jnp.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = 2 * n
    return y.reshape(shape)


def _blur_up_axis_fwd(x, axis):
    return _blur_up_axis(x, axis), None


def _blur_up_axis_bwd(axis, _, g):
    # x[j] gets 3/4 of g[2j] and g[2j+1], 1/4 of g[2j+2] and g[2j-1]; the replicated edges give
    # x[0] also g[0] / 4 and x[n-1] also g[2n-1] / 4.
    n = g.shape[axis] // 2
    take = functools.partial(jax.lax.slice_in_dim, axis=axis)
    even, odd = take(g, 0, 2 * n, 2), take(g, 1, 2 * n, 2)
    from_next = _place(take(even, 1, n), axis, 0, 1) + _place(take(even, 0, 1), axis, 0, n - 1)
    from_prev = _place(take(odd, 0, n - 1), axis, 1, 0) + _place(take(odd, n - 1, n), axis, n - 1, 0)
    return (0.75 * (even + odd) + 0.25 * (from_next + from_prev),)


_blur_up_axis.defvjp(_blur_up_axis_fwd, _blur_up_axis_bwd)


def blur_upsample(x: jax.Array) -> jax.Array:
    """Official `Upsample(filt_size=4, repl)`: equals bilinear x2 with half-pixel centres (docs/reference.md §1.3)."""
    return _blur_up_axis(_blur_up_axis(x, 1), 2)


def downsample_filter(channels: int) -> np.ndarray:
    """The `filt` buffer PyTorch stores for Downsample(C): shape (C, 1, 3, 3)."""
    a = np.array([1.0, 2.0, 1.0])
    f = np.outer(a, a) / np.sum(np.outer(a, a))
    return np.broadcast_to(f, (channels, 1, 3, 3)).astype(np.float32)


def upsample_filter(channels: int) -> np.ndarray:
    """The `filt` buffer PyTorch stores for Upsample(C): shape (C, 1, 4, 4), sum 4."""
    a = np.array([1.0, 3.0, 3.0, 1.0])
    f = np.outer(a, a) / np.sum(np.outer(a, a)) * 4
    return np.broadcast_to(f, (channels, 1, 4, 4)).astype(np.float32)


_DIMS = ("NHWC", "HWIO", "NHWC")

WGRAD_MIN_CHANNELS = 16
"""Below this many input or output channels XLA's own kernel gradient is faster: one tap GEMM per
kernel position with 3 outputs is a memory-bound copy of the input per tap (the translator's last
7x7 conv, 64 -> 3 at 128x128, batch 3: 507 ms by taps, 70 ms by XLA; docs/performance.md)."""


CPU_WGRAD = "onednn"
"""What `conv2d(wgrad="auto")` takes for wide convolutions on CPU: "onednn" (where available, else
"gemm") or "gemm". A process-wide preference for benchmarks and comparisons
(`tools/benchmark_training.py --wgrads`), read when a step is traced."""


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def _lax_conv(x, kernel, padding, stride=(1, 1), lhs_dilation=(1, 1)):
    return jax.lax.conv_general_dilated(
        x, kernel, stride, padding, lhs_dilation=lhs_dilation, dimension_numbers=_DIMS)


def _transpose_geometry(n: int, k: int, s: int, d: int, pad: tuple[int, int]) -> tuple[int, int]:
    """Padding of the convolution that computes the input gradient along one axis.

    Forward, per axis: `y[o] = sum_t xp[s o + t] K[t]` where `xp` is `x` dilated by `d` and padded by
    `pad`. Its transpose is again a convolution, of `dy` dilated by `s` with the flipped kernel, window
    stride `d`, low pad `k - 1 - p0` and the high pad returned here (so that it yields `n` samples).
    """
    p0, p1 = pad
    length = d * (n - 1) + 1 + p0 + p1
    n_out = (length - k) // s + 1
    lo = k - 1 - p0
    hi = d * (n - 1) + p0 - s * (n_out - 1)
    return lo, hi


def _crop(y, crop):
    return y[:, crop : y.shape[1] - crop, crop : y.shape[2] - crop, :] if crop else y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _conv_gemm(x, kernel, padding, stride, lhs_dilation, crop=0, kernel_grad="taps"):
    return _crop(_lax_conv(x, kernel, padding, stride, lhs_dilation), crop)


def _conv_gemm_fwd(x, kernel, padding, stride, lhs_dilation, crop, kernel_grad):
    # The primal goes through `_conv_gemm` itself, not `_lax_conv`: under a second derivative (R1)
    # the outer differentiation then meets this custom rule again instead of XLA's convolution
    # transpose, which XLA:CPU leaves in a slow non-canonical form inside `lax.cond` branches
    # (measured 19x slower for a 256-channel 3x3 R1 step).
    return _conv_gemm(x, kernel, padding, stride, lhs_dilation, crop, kernel_grad), (x, kernel)


def _conv_gemm_bwd(padding, stride, lhs_dilation, crop, kernel_grad, residuals, dy, input_grad=True,
                   want_kernel_grad=True):
    """Input gradient as the transposed convolution (itself a `_conv_gemm`, so a second derivative,
    as in R1, again takes the GEMM path); kernel gradient as one GEMM per kernel tap.

    Stride `s`, no dilation: `dW[i, j] = sum_{b,h,w} xp[b, s h + i, s w + j, :]^T dy[b, h, w, :]`.
    Dilation `d` (a transposed convolution), stride 1: only the real samples of the dilated input
    contribute, `dW[i, j] = sum_{b,h,w} x[b, h, w, :]^T dy[b, d h + p0 - i, d w + q0 - j, :]`
    (zero outside `dy`), so no product ever touches an inserted zero. Each tap is a
    `[C_in, N] @ [N, C_out]` matrix product: XLA:CPU lowers a convolution's kernel gradient to a
    slow loop nest (2-4.5x slower than PyTorch's for plain convolutions, ~70x for the transposed
    ones of StyleGAN2's upsampling layers; see benchmarks/), these GEMMs run at PyTorch's speed.

    `crop` (stride 1, no dilation): the output is cropped by `crop` on every side, which equals the
    convolution with `crop` less padding. The input gradient goes through the padded convolution (the
    fast form on XLA:CPU, see `Conv`) with dy zero-padded back; the kernel gradient takes its taps
    with the smaller padding, so it never multiplies the zero ring.

    `kernel_grad` "onednn" (no input dilation): the kernel gradient is one call of oneDNN's
    (`_onednn_wgrad`) instead of the tap loop.
    """
    x, kernel = residuals
    if crop:
        dy_full = jnp.pad(dy, ((0, 0), (crop, crop), (crop, crop), (0, 0)))
        dx, _ = _conv_gemm_bwd(padding, stride, lhs_dilation, 0, kernel_grad, (x, kernel), dy_full,
                               want_kernel_grad=False)
        inner = tuple((lo - crop, hi - crop) for lo, hi in padding)
        _, dw = _conv_gemm_bwd(inner, stride, lhs_dilation, 0, kernel_grad, (x, kernel), dy, input_grad=False)
        return dx, dw
    kh, kw, c_in, c_out = kernel.shape
    b, h, w, _ = x.shape
    (sh, sw), (dh, dw_) = stride, lhs_dilation
    # Input gradient: flipped kernel with in/out swapped, strides and dilations exchanged.
    geo = (_transpose_geometry(h, kh, sh, dh, padding[0]), _transpose_geometry(w, kw, sw, dw_, padding[1]))
    if not input_grad:
        dx = jnp.zeros((), x.dtype)
    elif min(min(g) for g in geo) < 0:
        (dx,) = jax.linear_transpose(lambda v: _lax_conv(v, kernel, padding, stride, lhs_dilation), x)(dy)
    else:
        flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
        dx = _conv_gemm(dy, flipped, geo, lhs_dilation, stride, 0, kernel_grad)
    if not want_kernel_grad:
        return dx.astype(x.dtype), None
    if kernel_grad == "onednn" and (dh, dw_) == (1, 1):
        return dx.astype(x.dtype), _onednn_wgrad(x, dy, (kh, kw), padding, stride).astype(kernel.dtype)
    ho, wo = dy.shape[1], dy.shape[2]
    if (dh, dw_) == (1, 1):
        (p0, p1), (q0, q1) = padding
        src, other = jnp.pad(x, ((0, 0), (p0, p1), (q0, q1), (0, 0))), dy.reshape(b, -1, c_out)
        span, step = (sh * (ho - 1) + 1, sw * (wo - 1) + 1), (sh, sw)
        origin = lambda i, j: (i, j)  # noqa: E731
        product = lambda window, other: jnp.einsum(  # noqa: E731
            "bnc,bnd->bcd", window.reshape(b, -1, c_in), other, preferred_element_type=jnp.float32)
    else:
        (p0, _), (q0, _) = padding
        lo_h, lo_w = kh - 1, kw - 1
        hi_h = max(0, p0 + dh * (h - 1) + 1 - ho)
        hi_w = max(0, q0 + dw_ * (w - 1) + 1 - wo)
        src, other = jnp.pad(dy, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0))), x.reshape(b, -1, c_in)
        span, step = (dh * (h - 1) + 1, dw_ * (w - 1) + 1), (dh, dw_)
        origin = lambda i, j: (p0 - i + lo_h, q0 - j + lo_w)  # noqa: E731
        product = lambda window, other: jnp.einsum(  # noqa: E731
            "bnc,bnd->bcd", other, window.reshape(b, -1, c_out), preferred_element_type=jnp.float32)

    def tap(_, t):
        # One tap per iteration of a loop: the windows are copied one at a time, so the program never
        # holds all kh * kw of them (9 copies of the input would be GBs at 256x256). The products
        # keep the batch axis and the sum over it comes after the loop: with the batch split over
        # devices or hosts the loop body then needs no collective (an all-reduce inside two
        # independent loops can run in different orders on different hosts and deadlock).
        r0, c0 = origin(t // kw, t % kw)
        window = jax.lax.dynamic_slice(src, (0, r0, c0, 0), (b, span[0], span[1], src.shape[3]))
        if step != (1, 1):
            window = window[:, :: step[0], :: step[1], :]
        return None, product(window, other)

    _, dw = jax.lax.scan(tap, None, jnp.arange(kh * kw))
    dw = jnp.sum(dw, axis=1).reshape(kh, kw, c_in, c_out)
    return dx.astype(x.dtype), dw.astype(kernel.dtype)


_conv_gemm.defvjp(_conv_gemm_fwd, _conv_gemm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _onednn_wgrad(x, dy, kernel_hw, padding, stride):
    """oneDNN's kernel gradient (`kernels.onednn.conv_wgrad`) with its own derivative, so that a
    second derivative through a convolution (R1) works on this path too. The map is bilinear:
    `<G, dW(x, dy)> = <dy, conv(x, G)>`, so the cotangent `G` gives `dy_bar = conv(x, G)` and
    `x_bar` = the input gradient of `conv(., G)` at `dy`."""
    return onednn.conv_wgrad(x, dy, kernel_hw, padding, stride)


def _onednn_wgrad_fwd(x, dy, kernel_hw, padding, stride):
    return _onednn_wgrad(x, dy, kernel_hw, padding, stride), (x, dy)


def _onednn_wgrad_bwd(kernel_hw, padding, stride, residuals, g):
    x, dy = residuals
    g = g.astype(x.dtype)
    dy_bar = _conv_gemm(x, g, padding, stride, (1, 1), 0, "onednn")
    x_bar, _ = _conv_gemm_bwd(padding, stride, (1, 1), 0, "onednn", (x, g), dy, want_kernel_grad=False)
    return x_bar, dy_bar.astype(dy.dtype)


_onednn_wgrad.defvjp(_onednn_wgrad_fwd, _onednn_wgrad_bwd)


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    padding,
    wgrad: str = "auto",
    *,
    stride: int | tuple[int, int] = 1,
    lhs_dilation: int | tuple[int, int] = 1,
    crop: int = 0,
) -> jax.Array:
    """NHWC x HWIO convolution with explicit non-negative padding `((top, bottom), (left, right))`,
    window `stride` and input dilation (`lhs_dilation` 2 = zero insertion: a stride-2 transposed
    convolution with the flipped kernel). Not both a stride and a dilation above 1.

    `wgrad` picks how the kernel gradient is computed: "xla" (XLA's transpose rule), "gemm" (matrix
    products per kernel tap, see `_conv_gemm_bwd`), "onednn" (oneDNN's kernel gradient through an XLA
    custom call, `kernels.onednn`; CPU, no input dilation), or "auto": on CPU, for kernels with at
    least `WGRAD_MIN_CHANNELS` input and output channels, "onednn" where it is available and the
    program runs on one device (the custom call has no rule for splitting a batch over devices),
    else "gemm"; "xla" everywhere else (GPU/TPU convolution libraries are fast). All give the same
    gradients, first and second order, up to float32 summation order.
    `crop` removes that many rows and columns from every side of the output (stride 1, no dilation).
    """
    stride, lhs_dilation = _pair(stride), _pair(lhs_dilation)
    padding = tuple(_pair(p) for p in padding)
    if wgrad == "auto":
        wgrad = "xla"
        if jax.default_backend() == "cpu" and min(kernel.shape[2], kernel.shape[3]) >= WGRAD_MIN_CHANNELS:
            wgrad = "gemm"
            if (CPU_WGRAD == "onednn" and max(lhs_dilation) == 1 and jax.device_count() == 1
                    and onednn.available()):
                wgrad = "onednn"
    if wgrad == "onednn":
        if max(lhs_dilation) > 1:
            raise ValueError("conv2d: wgrad='onednn' does not take an input dilation")
        if not onednn.available():
            raise ValueError(f"conv2d: wgrad='onednn' is unavailable here: {onednn.status()[1]}")
    if wgrad in ("gemm", "onednn"):
        if max(stride) > 1 and max(lhs_dilation) > 1:
            raise ValueError("conv2d: a stride and an input dilation together are not supported")
        if min(min(p) for p in padding) < 0:
            raise ValueError(f"conv2d: padding must be non-negative, got {padding}")
        if crop and (max(stride) > 1 or max(lhs_dilation) > 1):
            raise ValueError("conv2d: crop needs stride 1 and no input dilation")
        return _conv_gemm(x, kernel, padding, stride, lhs_dilation, crop, "onednn" if wgrad == "onednn" else "taps")
    if wgrad != "xla":
        raise ValueError(f"wgrad must be 'auto', 'gemm', 'onednn' or 'xla', got {wgrad!r}")
    return _crop(_lax_conv(x, kernel, padding, stride, lhs_dilation), crop)


class Conv(nn.Module):
    """PyTorch `Conv2d(in, features, kernel_size, stride=1, padding=padding, bias=True)`, NHWC.

    Parameters are `kernel` [k, k, C_in, C_out] and `bias` [C_out], initialised as CUT does.
    Unpadded odd-sized convolutions (the official code reflect-pads first, then convolves with
    padding 0) run as "SAME convolution, then crop": XLA:CPU computes a VALID convolution about
    3x slower than a SAME one of the same size (measured: 84 ms vs 30 ms for 256->256 3x3 at
    64x64), and the interior that the crop keeps is exactly the VALID result. The kernel gradient
    goes through `conv2d`'s `wgrad` choice; on the tap-GEMM path it is taken over the VALID positions
    only (`conv2d(crop=...)`).
    """

    features: int
    kernel_size: int
    padding: int = 0
    dtype: jnp.dtype = jnp.float32
    wgrad: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, p = self.kernel_size, self.padding
        kernel = self.param("kernel", xavier_normal(), (k, k, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        crop = 0
        if p == 0 and k % 2 == 1 and k > 1:
            p = crop = (k - 1) // 2  # SAME
        y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), ((p, p), (p, p)), self.wgrad, crop=crop)
        return y + bias.astype(self.dtype)
