"""pytorch-fid's FID Inception-v3 (`FIDInceptionV3`, the port of TF `inception-2015-12-05`), NHWC.

The network FID and KID are computed with (docs/reference.md §6.1): torchvision's `Inception3` layout
with 1008 classes and no auxiliary head, every convolution bias-free and followed by BatchNorm
(eps 1e-3) and ReLU, and two departures from torchvision: `branch_pool` of blocks A, C and E_1 averages
with `count_include_pad=False`, and the last block (E_2) max-pools there instead.

    stem:  Conv2d_1a_3x3 (stride 2), Conv2d_2a_3x3, Conv2d_2b_3x3 (pad 1), maxpool1 (3, 2),
           Conv2d_3b_1x1, Conv2d_4a_3x3, maxpool2 (3, 2)
    mixed: Mixed_5b..5d (A), Mixed_6a (B), Mixed_6b..6e (C), Mixed_7a (D), Mixed_7b (E_1), Mixed_7c (E_2)
    head:  global average pool -> pool3 [B, 2048] (the FID features); fc -> logits [B, 1008]

At 299x299 the spatial sizes are 149, 147, 147, 73, 73, 71, 35 (5b..5d), 17 (6a..6e), 8 (7a..7c).
The smallest input that passes every valid-padded stride is 75x75, as in PyTorch.

Parameter names mirror the published state dict one to one: torch `Mixed_5b.branch5x5_1.conv.weight`
is `Mixed_5b/branch5x5_1/conv/kernel` (HWIO), `.bn.{weight, bias, running_mean, running_var}` are
`bn/{scale, bias, mean, var}`, `fc.{weight, bias}` are `fc/{kernel, bias}`. BatchNorm statistics are
ordinary parameters, so the whole network is `FIDInceptionV3().apply({"params": params}, x)`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NUM_FEATURES = 2048
"""Width of the pool3 features FID uses."""
NUM_CLASSES = 1008
"""Classes of the TF graph's softmax (1000 ImageNet classes plus unused ones)."""
INPUT_SIZE = 299
"""Side the pytorch-fid protocol resizes every image to before the network (the caller resizes)."""
MIN_INPUT_SIZE = 75
BN_EPS = 1e-3


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One `BasicConv2d`: Conv2d(cin, cout, kernel, stride, padding, bias=False) + BatchNorm + ReLU."""

    name: str  # dotted torch prefix, e.g. "Mixed_6b.branch7x7_2"
    cin: int
    cout: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: tuple[int, int] = (0, 0)


STEM = (
    ConvSpec("Conv2d_1a_3x3", 3, 32, (3, 3), stride=2),
    ConvSpec("Conv2d_2a_3x3", 32, 32, (3, 3)),
    ConvSpec("Conv2d_2b_3x3", 32, 64, (3, 3), padding=(1, 1)),
    ConvSpec("Conv2d_3b_1x1", 64, 80),
    ConvSpec("Conv2d_4a_3x3", 80, 192, (3, 3)),
)

# (name, block type, input channels, type argument: pool_features for A, channels_7x7 for C)
MIXED = (
    ("Mixed_5b", "A", 192, 32),
    ("Mixed_5c", "A", 256, 64),
    ("Mixed_5d", "A", 288, 64),
    ("Mixed_6a", "B", 288, 0),
    ("Mixed_6b", "C", 768, 128),
    ("Mixed_6c", "C", 768, 160),
    ("Mixed_6d", "C", 768, 160),
    ("Mixed_6e", "C", 768, 192),
    ("Mixed_7a", "D", 768, 0),
    ("Mixed_7b", "E_1", 1280, 0),
    ("Mixed_7c", "E_2", 2048, 0),
)

BLOCK_NAMES = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2",
    *(name for name, *_ in MIXED),
)
"""Every name `taps` accepts, in network order (the two stem max pools are named as in torchvision)."""

def block_convs(kind: str, cin: int, arg: int = 0) -> tuple[ConvSpec, ...]:
    """The branch convolutions of one mixed block (names without the block prefix), torch order.

    The 1xk / kx1 convolutions pad only along their long side, so every branch keeps H, W.
    """
    if kind == "A":
        return (
            ConvSpec("branch1x1", cin, 64),
            ConvSpec("branch5x5_1", cin, 48),
            ConvSpec("branch5x5_2", 48, 64, (5, 5), padding=(2, 2)),
            ConvSpec("branch3x3dbl_1", cin, 64),
            ConvSpec("branch3x3dbl_2", 64, 96, (3, 3), padding=(1, 1)),
            ConvSpec("branch3x3dbl_3", 96, 96, (3, 3), padding=(1, 1)),
            ConvSpec("branch_pool", cin, arg),
        )
    if kind == "B":
        return (
            ConvSpec("branch3x3", cin, 384, (3, 3), stride=2),
            ConvSpec("branch3x3dbl_1", cin, 64),
            ConvSpec("branch3x3dbl_2", 64, 96, (3, 3), padding=(1, 1)),
            ConvSpec("branch3x3dbl_3", 96, 96, (3, 3), stride=2),
        )
    if kind == "C":
        c7 = arg
        return (
            ConvSpec("branch1x1", cin, 192),
            ConvSpec("branch7x7_1", cin, c7),
            ConvSpec("branch7x7_2", c7, c7, (1, 7), padding=(0, 3)),
            ConvSpec("branch7x7_3", c7, 192, (7, 1), padding=(3, 0)),
            ConvSpec("branch7x7dbl_1", cin, c7),
            ConvSpec("branch7x7dbl_2", c7, c7, (7, 1), padding=(3, 0)),
            ConvSpec("branch7x7dbl_3", c7, c7, (1, 7), padding=(0, 3)),
            ConvSpec("branch7x7dbl_4", c7, c7, (7, 1), padding=(3, 0)),
            ConvSpec("branch7x7dbl_5", c7, 192, (1, 7), padding=(0, 3)),
            ConvSpec("branch_pool", cin, 192),
        )
    if kind == "D":
        return (
            ConvSpec("branch3x3_1", cin, 192),
            ConvSpec("branch3x3_2", 192, 320, (3, 3), stride=2),
            ConvSpec("branch7x7x3_1", cin, 192),
            ConvSpec("branch7x7x3_2", 192, 192, (1, 7), padding=(0, 3)),
            ConvSpec("branch7x7x3_3", 192, 192, (7, 1), padding=(3, 0)),
            ConvSpec("branch7x7x3_4", 192, 192, (3, 3), stride=2),
        )
    if kind in ("E_1", "E_2"):
        return (
            ConvSpec("branch1x1", cin, 320),
            ConvSpec("branch3x3_1", cin, 384),
            ConvSpec("branch3x3_2a", 384, 384, (1, 3), padding=(0, 1)),
            ConvSpec("branch3x3_2b", 384, 384, (3, 1), padding=(1, 0)),
            ConvSpec("branch3x3dbl_1", cin, 448),
            ConvSpec("branch3x3dbl_2", 448, 384, (3, 3), padding=(1, 1)),
            ConvSpec("branch3x3dbl_3a", 384, 384, (1, 3), padding=(0, 1)),
            ConvSpec("branch3x3dbl_3b", 384, 384, (3, 1), padding=(1, 0)),
            ConvSpec("branch_pool", cin, 192),
        )
    raise ValueError(f"unknown Inception block type {kind!r}")


def conv_specs() -> tuple[ConvSpec, ...]:
    """All 94 `BasicConv2d` layers in network order, named by their dotted torch prefix."""
    specs = list(STEM)
    for block, kind, cin, arg in MIXED:
        specs += [dataclasses.replace(s, name=f"{block}.{s.name}") for s in block_convs(kind, cin, arg)]
    return tuple(specs)


def param_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the published state dict (without `num_batches_tracked`), torch layouts."""
    shapes: dict[str, tuple[int, ...]] = {}
    for s in conv_specs():
        shapes[f"{s.name}.conv.weight"] = (s.cout, s.cin, *s.kernel)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{s.name}.bn.{stat}"] = (s.cout,)
    shapes["fc.weight"] = (NUM_CLASSES, NUM_FEATURES)
    shapes["fc.bias"] = (NUM_CLASSES,)
    return shapes


def _nest(tree: dict, dotted: str, leaf: dict) -> None:
    node = tree
    for part in dotted.split("."):
        node = node.setdefault(part, {})
    node.update(leaf)


def random_params(seed: int = 0) -> dict:
    """Random float32 numpy parameters in the layout `FIDInceptionV3` expects (no tracing, ~0.5 s).

    For demos, tests and benchmarks when no weights file exists. Kernels are He-scaled
    (std sqrt(2 / fan_in), which keeps the second moment through conv + ReLU) and the BatchNorm
    statistics are random but mild (variances in [0.5, 1.5], scales near 1), so activations stay O(1)
    through all 94 layers (RMS about 0.5 at the stem to 7 at Mixed_7c) and every parameter visibly
    matters.
    """
    rng = np.random.default_rng(seed)
    params: dict = {}
    for s in conv_specs():
        kh, kw = s.kernel
        c = s.cout
        kernel = rng.standard_normal((kh, kw, s.cin, c), np.float32) * np.float32(np.sqrt(2.0 / (kh * kw * s.cin)))
        bn = {
            "scale": rng.uniform(0.8, 1.2, c).astype(np.float32),
            "bias": (0.1 * rng.standard_normal(c)).astype(np.float32),
            "mean": (0.1 * rng.standard_normal(c)).astype(np.float32),
            "var": rng.uniform(0.5, 1.5, c).astype(np.float32),
        }
        _nest(params, s.name, {"conv": {"kernel": kernel}, "bn": bn})
    params["fc"] = {
        "kernel": rng.standard_normal((NUM_FEATURES, NUM_CLASSES), np.float32) * np.float32(NUM_FEATURES**-0.5),
        "bias": (0.01 * rng.standard_normal(NUM_CLASSES)).astype(np.float32),
    }
    return params


class _ConvKernel(nn.Module):
    """Holds the `conv/kernel` [kh, kw, C_in, C_out] of one `BasicConv2d` (torch `.conv.weight`)."""

    shape: tuple[int, int, int, int]

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("kernel", nn.initializers.lecun_normal(), self.shape, jnp.float32)


class _BatchNormStats(nn.Module):
    """Holds `bn/{scale, bias, mean, var}` [C] (torch `.bn.{weight, bias, running_mean, running_var}`)."""

    features: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, ...]:
        c = (self.features,)
        return (
            self.param("scale", nn.initializers.ones, c, jnp.float32),
            self.param("bias", nn.initializers.zeros, c, jnp.float32),
            self.param("mean", nn.initializers.zeros, c, jnp.float32),
            self.param("var", nn.initializers.ones, c, jnp.float32),
        )


class BasicConv2d(nn.Module):
    """torchvision's `BasicConv2d` in inference mode: `[B, H, W, C_in] -> [B, H', W', C_out]`.

    BatchNorm uses its running statistics, so it is the affine map `y * a + b` per channel with
    `a = scale / sqrt(var + eps)` and `b = bias - mean * a`. That map is applied to the convolution's
    output, not folded into the kernel: the bias add and ReLU need one elementwise pass over the
    output anyway (XLA fuses `* a + b` and the ReLU into it), whereas folding inside `apply` would
    rewrite all 22 M kernel weights on every call (measured on 2 CPU cores at 299x299: 200 ms vs
    263 ms per batch of 1, 2.19 s vs 2.27 s per batch of 8). Both agree with float32 torch to
    rounding; keeping the file's numbers unfolded also keeps `params` exactly the converted file.
    """

    features: int
    kernel_size: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        kernel = _ConvKernel((kh, kw, x.shape[-1], self.features), name="conv")()
        scale, bias, mean, var = _BatchNormStats(self.features, name="bn")()
        a = scale * jax.lax.rsqrt(var + BN_EPS)
        b = bias - mean * a
        (ph, pw), s = self.padding, self.stride
        crop = None
        if self.padding == (0, 0) and kh > 1 and kw > 1:
            # XLA:CPU runs an unpadded kxk convolution 2-4x slower than the same one with one row and
            # column of zeros on the far side (measured at batch 8: Conv2d_4a_3x3 490 ms vs 110 ms,
            # Conv2d_2a_3x3 260 vs 80, Mixed_6a's stride-2 branch3x3 58 vs 40). The extra zeros only
            # add outputs after the last valid one, which the crop drops: the result is the VALID one.
            crop = ((x.shape[1] - kh) // s + 1, (x.shape[2] - kw) // s + 1)
            padding = ((0, 1), (0, 1))
        else:
            padding = ((ph, ph), (pw, pw))
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            window_strides=(s, s),
            padding=padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        if crop is not None:
            y = y[:, : crop[0], : crop[1], :]
        return nn.relu(y * a.astype(self.dtype) + b.astype(self.dtype))


def _conv(spec: ConvSpec, dtype) -> BasicConv2d:
    return BasicConv2d(spec.cout, spec.kernel, spec.stride, spec.padding, dtype=dtype, name=spec.name)


def max_pool_3x3(x: jax.Array, stride: int, padding: int = 0) -> jax.Array:
    """`MaxPool2d(3, stride, padding)` (floor mode; padding counts as -inf, as in torch)."""
    p = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=p)


def avg_pool_3x3_exclude_pad(x: jax.Array) -> jax.Array:
    """`avg_pool2d(3, stride=1, padding=1, count_include_pad=False)`: border windows divide by the
    number of real pixels they cover (4 at corners, 6 on edges), per docs/reference.md §6.1.

    The divisor depends only on the static H, W, so it is a numpy constant here rather than a second
    pooling of a ones array.
    """
    h, w = x.shape[1], x.shape[2]
    total = jax.lax.reduce_window(
        x, jnp.zeros((), x.dtype), jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    )

    def covered(n: int) -> np.ndarray:
        i = np.arange(n)
        return np.minimum(i + 1, n - 1) - np.maximum(i - 1, 0) + 1

    count = (covered(h)[:, None] * covered(w)[None, :]).astype(np.float32)
    return total * jnp.asarray(1.0 / count, x.dtype)[None, :, :, None]


class InceptionBlock(nn.Module):
    """One mixed block `[B, H, W, C_in] -> [B, H', W', C_out]`, branches concatenated in torch order.

    A: [1x1 64, 5x5 64, 3x3dbl 96, pool] -> 224 + pool_features (256, 288, 288)
    B: [3x3/2 384, 3x3dbl/2 96, maxpool/2 C_in] -> 768, halves H, W
    C: [1x1 192, 7x7 192, 7x7dbl 192, pool 192] -> 768
    D: [3x3/2 320, 7x7x3/2 192, maxpool/2 C_in] -> 1280, halves H, W
    E: [1x1 320, 3x3 = cat(1x3, 3x1) 768, 3x3dbl = cat(1x3, 3x1) 768, pool 192] -> 2048
    """

    kind: str
    arg: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        spec = {s.name: s for s in block_convs(self.kind, x.shape[-1], self.arg)}

        def conv(name: str, h: jax.Array) -> jax.Array:
            return _conv(spec[name], self.dtype)(h)

        def chain(h: jax.Array, *names: str) -> jax.Array:
            for name in names:
                h = conv(name, h)
            return h

        if self.kind == "A":
            branches = [
                conv("branch1x1", x),
                chain(x, "branch5x5_1", "branch5x5_2"),
                chain(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                conv("branch_pool", avg_pool_3x3_exclude_pad(x)),
            ]
        elif self.kind == "B":
            branches = [
                conv("branch3x3", x),
                chain(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                max_pool_3x3(x, stride=2),
            ]
        elif self.kind == "C":
            branches = [
                conv("branch1x1", x),
                chain(x, "branch7x7_1", "branch7x7_2", "branch7x7_3"),
                chain(x, *(f"branch7x7dbl_{i}" for i in range(1, 6))),
                conv("branch_pool", avg_pool_3x3_exclude_pad(x)),
            ]
        elif self.kind == "D":
            branches = [
                chain(x, "branch3x3_1", "branch3x3_2"),
                chain(x, *(f"branch7x7x3_{i}" for i in range(1, 5))),
                max_pool_3x3(x, stride=2),
            ]
        else:  # E_1, E_2: the 1x3 and 3x1 convolutions both read the same input, then concatenate
            b3 = conv("branch3x3_1", x)
            d3 = chain(x, "branch3x3dbl_1", "branch3x3dbl_2")
            # E_2 (Mixed_7c) max-pools where E_1 averages: pytorch-fid's reproduction of the TF graph.
            pooled = avg_pool_3x3_exclude_pad(x) if self.kind == "E_1" else max_pool_3x3(x, stride=1, padding=1)
            branches = [
                conv("branch1x1", x),
                jnp.concatenate([conv("branch3x3_2a", b3), conv("branch3x3_2b", b3)], axis=-1),
                jnp.concatenate([conv("branch3x3dbl_3a", d3), conv("branch3x3dbl_3b", d3)], axis=-1),
                conv("branch_pool", pooled),
            ]
        return jnp.concatenate(branches, axis=-1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception-v3: `x [B, H, W, 3]` in [-1, 1] -> pool3 features `[B, 2048]` float32.

    The caller does the resizing and scaling (pytorch-fid: bilinear to 299x299, then `2x - 1`; see
    docs/reference.md §6.1 for the other protocols); any H, W >= 75 works, as in PyTorch.

    Returns, by the arguments:
      * default:                `pool3`
      * `logits=True`:          `(pool3, logits [B, 1008])`
      * `taps=("Mixed_6e", ...)`: the above followed by `{name: [B, h, w, c] float32}`, the outputs of
        those blocks (any of `BLOCK_NAMES`), i.e. `(pool3, taps)` or `(pool3, logits, taps)`; look
        them up by name (under `jax.jit` a returned dict comes back with sorted keys).

    `dtype=jnp.bfloat16` runs convolutions and pools in bfloat16 (parameters stay float32); the
    global pool, fc and all returned arrays are float32.

    `params` is the converted file (`scenimefy_jax.convert.inception`) or `random_params()`; both hold
    `fc`, which only `logits=True` reads (so `init` without logits creates no `fc`).
    """

    dtype: Any = jnp.float32
    logits: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, taps: Sequence[str] = ()):
        taps = tuple(taps)
        unknown = [t for t in taps if t not in BLOCK_NAMES]
        if unknown:
            raise ValueError(f"unknown Inception taps {unknown}; choose from {list(BLOCK_NAMES)}")
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected [B, H, W, 3] images, got shape {x.shape}")
        if min(x.shape[1:3]) < MIN_INPUT_SIZE:
            raise ValueError(f"Inception-v3 needs H, W >= {MIN_INPUT_SIZE}, got {x.shape[1:3]}")

        recorded: dict[str, jax.Array] = {}

        def keep(name: str, h: jax.Array) -> jax.Array:
            if name in taps:
                recorded[name] = h.astype(jnp.float32)
            return h

        h = x.astype(self.dtype)
        for spec in STEM:
            h = keep(spec.name, _conv(spec, self.dtype)(h))
            if spec.name == "Conv2d_2b_3x3":
                h = keep("maxpool1", max_pool_3x3(h, stride=2))
        h = keep("maxpool2", max_pool_3x3(h, stride=2))
        for name, kind, _, arg in MIXED:
            h = keep(name, InceptionBlock(kind, arg, dtype=self.dtype, name=name)(h))

        pool3 = jnp.mean(h.astype(jnp.float32), axis=(1, 2))  # AdaptiveAvgPool2d(1); dropout is off in eval
        out: tuple = (pool3,)
        if self.logits:
            out += (nn.Dense(NUM_CLASSES, dtype=jnp.float32, name="fc")(pool3),)
        if taps:
            out += ({t: recorded[t] for t in taps},)
        return out[0] if len(out) == 1 else out
