"""Closed forms of the anti-aliased resampling filters (docs/reference.md §1.3) and InstanceNorm."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scenimefy_jax.models import layers


def _down_1d(x):
    n = len(x)
    xr = lambda i: x[1] if i == -1 else (x[n - 2] if i == n else x[i])  # reflection
    return np.array([(xr(2 * i - 1) + 2 * xr(2 * i) + xr(2 * i + 1)) / 4 for i in range((n + 1) // 2)])


def _up_1d(x):
    n = len(x)
    xc = lambda i: x[min(max(i, 0), n - 1)]  # replication
    y = np.zeros(2 * n)
    for i in range(n):
        y[2 * i] = 0.25 * xc(i - 1) + 0.75 * xc(i)
        y[2 * i + 1] = 0.75 * xc(i) + 0.25 * xc(i + 1)
    return y


def _separable(fn, img):
    rows = np.stack([fn(r) for r in img])  # along W
    return np.stack([fn(c) for c in rows.T]).T  # then along H


@pytest.mark.parametrize("h,w", [(7, 9), (8, 8), (9, 4), (2, 3)])
def test_blur_downsample_matches_closed_form(h, w):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(h, w))
    got = np.asarray(layers.blur_downsample(jnp.asarray(img, jnp.float32)[None, :, :, None]))[0, :, :, 0]
    assert got.shape == ((h + 1) // 2, (w + 1) // 2)
    np.testing.assert_allclose(got, _separable(_down_1d, img), atol=1e-6)


@pytest.mark.parametrize("h,w", [(1, 1), (3, 5), (4, 4)])
def test_blur_upsample_matches_closed_form(h, w):
    rng = np.random.default_rng(1)
    img = rng.normal(size=(h, w))
    got = np.asarray(layers.blur_upsample(jnp.asarray(img, jnp.float32)[None, :, :, None]))[0, :, :, 0]
    assert got.shape == (2 * h, 2 * w)
    np.testing.assert_allclose(got, _separable(_up_1d, img), atol=1e-6)


def _linear_map(fn, h, w):
    """The matrix of a linear map of [h, w] images, column k the image of the k-th basis image."""
    return np.stack([fn(np.eye(h * w)[k].reshape(h, w)).ravel() for k in range(h * w)], axis=1)


@pytest.mark.parametrize("op,h,w", [
    ("down", 7, 9), ("down", 8, 8), ("down", 2, 3), ("up", 1, 1), ("up", 3, 5), ("up", 4, 4),
    ("reflect1", 5, 6), ("reflect3", 7, 4)])
def test_stencil_gradients_are_the_transposed_closed_forms(op, h, w):
    # The blur stencils and the reflection padding carry hand-written VJPs (layers.py): for a linear
    # map the VJP of a cotangent g is A^T g, A the closed form's matrix built here in numpy. Batch 2 and
    # 3 channels, each (sample, channel) slice its own image. Tolerance: float32 rounding of sums of
    # at most 9 terms.
    closed, fn = {
        "down": (lambda v: _separable(_down_1d, v), layers.blur_downsample),
        "up": (lambda v: _separable(_up_1d, v), layers.blur_upsample),
        "reflect1": (lambda v: np.pad(v, 1, mode="reflect"), lambda x: layers.reflect_pad(x, 1)),
        "reflect3": (lambda v: np.pad(v, 3, mode="reflect"), lambda x: layers.reflect_pad(x, 3)),
    }[op]
    a = _linear_map(closed, h, w)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, h, w, 3)), jnp.float32)
    y, vjp = jax.vjp(fn, x)
    g = rng.normal(size=y.shape).astype(np.float32)
    (got,) = vjp(jnp.asarray(g))
    want = np.einsum("ok,bop->bkp", a, g.reshape(2, -1, 3)).reshape(2, h, w, 3)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(y), np.einsum("ok,bkp->bop", a, np.asarray(x).reshape(2, -1, 3))
                               .reshape(y.shape), atol=1e-5, rtol=1e-5)


def test_filters_match_the_published_buffers():
    down = layers.downsample_filter(2)
    np.testing.assert_array_equal(down[1, 0], np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)
    up = layers.upsample_filter(1)[0, 0]
    assert up.sum() == pytest.approx(4.0)
    np.testing.assert_allclose(up[0], np.array([1, 3, 3, 1]) / 64 * 4)


def test_instance_norm_per_sample_and_channel():
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 2.0, size=(2, 5, 6, 3)).astype(np.float32)
    got = np.asarray(layers.instance_norm(jnp.asarray(x)))
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)  # biased, as InstanceNorm2d
    np.testing.assert_allclose(got, (x - mean) / np.sqrt(var + 1e-5), atol=1e-5)


@pytest.mark.parametrize(
    "shape,k,padding,stride,dilation,crop",
    [
        ((2, 9, 11, 20), 3, ((1, 1), (1, 1)), 1, 1, 0),  # translator / StyleGAN2 3x3
        ((2, 9, 11, 20), 3, ((1, 1), (1, 1)), 1, 1, 1),  # translator ResnetBlock: SAME, then crop (= VALID)
        ((1, 12, 11, 16), 7, ((3, 3), (3, 3)), 1, 1, 3),  # 7x7 SAME, then crop
        ((1, 12, 10, 16), 4, ((1, 1), (1, 1)), 1, 1, 0),  # PatchGAN 4x4
        ((1, 8, 8, 32), 7, ((3, 3), (3, 3)), 1, 1, 0),  # translator stem
        ((2, 9, 11, 20), 3, ((0, 0), (0, 0)), 2, 1, 0),  # StyleGAN2 D conv2 (odd input after the blur)
        ((2, 10, 10, 20), 3, ((0, 0), (0, 0)), 2, 1, 0),  # even input: the last row is never read
        ((1, 5, 5, 17), 1, ((0, 0), (0, 0)), 2, 1, 0),  # D skip 1x1 stride 2
        ((2, 6, 5, 3), 1, ((0, 0), (0, 0)), 1, 1, 0),  # D's first 1x1 conv on RGB
        ((2, 7, 6, 20), 3, ((2, 2), (2, 2)), 1, 2, 0),  # StyleGAN2 upsampling conv (transposed, stride 2)
        ((2, 6, 6, 20), 3, ((1, 0), (2, 1)), 1, 2, 0),  # asymmetric padding with dilation
    ],
)
@pytest.mark.parametrize("mode", ["gemm", "onednn"])
def test_gemm_gradients_equal_xla(shape, k, padding, stride, dilation, crop, mode):
    """The GEMM kernel gradient ("gemm": per-tap products; "onednn": oneDNN's through a custom call)
    and the transposed-convolution input gradient vs XLA's own rules, to first order and to second
    order (an R1-style penalty: grad wrt the kernel of |grad wrt x|^2). Tolerance: 1e-4 of the
    largest gradient (float32 summation-order differences only). oneDNN takes no input dilation:
    there the mode must refuse."""
    import jax

    from scenimefy_jax.kernels import onednn

    if mode == "onednn" and not onednn.available():
        pytest.skip(f"oneDNN kernel: {onednn.status()[1]}")

    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, shape[-1], 24)) / k, jnp.float32)
    conv = lambda mode: lambda x, w: layers.conv2d(  # noqa: E731
        x, w, padding, mode, stride=stride, lhs_dilation=dilation, crop=crop)
    y = conv("xla")(x, w)
    if crop:  # SAME then crop is the VALID convolution
        valid = jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        np.testing.assert_allclose(np.asarray(y), np.asarray(valid), rtol=0, atol=1e-5 * float(np.max(np.abs(valid))))
    cot = jnp.asarray(rng.normal(size=y.shape), jnp.float32)

    def close(got, want):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-4 * float(np.max(np.abs(want))))

    if mode == "onednn" and dilation > 1:
        with pytest.raises(ValueError, match="input dilation"):
            conv(mode)(x, w)
        return
    close(conv(mode)(x, w), y)
    loss = lambda m: lambda x, w: jnp.sum(conv(m)(x, w) * cot)  # noqa: E731
    want = jax.grad(loss("xla"), argnums=(0, 1))(x, w)
    got = jax.jit(jax.grad(loss(mode), argnums=(0, 1)))(x, w)
    for g, r in zip(got, want):
        close(g, r)

    def r1(m):
        return lambda w, x: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.tanh(conv(m)(x, w))))(x) ** 2)

    close(jax.jit(jax.grad(r1(mode)))(w, x), jax.grad(r1("xla"))(w, x))


def test_conv2d_rejects_bad_options():
    x = jnp.zeros((1, 8, 8, 16))
    w = jnp.zeros((3, 3, 16, 4))
    with pytest.raises(ValueError, match="wgrad"):
        layers.conv2d(x, w, ((1, 1), (1, 1)), "fast")
    with pytest.raises(ValueError, match="stride and an input dilation"):
        layers.conv2d(x, w, ((1, 1), (1, 1)), "gemm", stride=2, lhs_dilation=2)
    with pytest.raises(ValueError, match="non-negative"):
        layers.conv2d(x, w, ((-1, 1), (1, 1)), "gemm")
    with pytest.raises(ValueError, match="crop needs stride 1"):
        layers.conv2d(x, w, ((1, 1), (1, 1)), "gemm", stride=2, crop=1)


def _conv_kernel_shapes(jaxpr) -> list[tuple[int, ...]]:
    """rhs (kernel) shapes of every convolution in a jaxpr, sub-jaxprs (cond branches, custom rules) included."""
    from jax.extend import core as jex

    def subs(value):
        if isinstance(value, jex.ClosedJaxpr):
            return [value.jaxpr]
        if isinstance(value, jex.Jaxpr):
            return [value]
        if isinstance(value, (tuple, list)):
            return [j for v in value for j in subs(v)]
        return []

    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            shapes.append(tuple(eqn.invars[1].aval.shape))
        for value in eqn.params.values():
            for sub in subs(value):
                shapes += _conv_kernel_shapes(sub)
    return shapes


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2)])
def test_gemm_second_order_has_no_kernel_gradient_convolution(stride, dilation):
    """With "gemm", an R1-style second derivative under `lax.cond` contains only convolutions with the
    real 3x3 kernel (forward and input-gradient ones): no XLA kernel-gradient convolution, whose
    "kernel" is an activation-sized array. Those are what XLA:CPU runs 20-70x slower (and, inside
    `lax.cond`, leaves non-canonical). The "xla" mode has them, which shows the check can fail."""
    import jax

    x = jnp.ones((2, 12, 12, 8))
    w = jnp.ones((3, 3, 8, 8))
    padding = ((1, 1), (1, 1))

    def shapes(mode):
        conv = lambda x, w: layers.conv2d(x, w, padding, mode, stride=stride, lhs_dilation=dilation)  # noqa: E731
        r1 = lambda w: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w))))(x) ** 2)  # noqa: E731
        step = lambda w, c: jax.lax.cond(c, jax.grad(r1), jnp.zeros_like, w)  # noqa: E731
        return _conv_kernel_shapes(jax.make_jaxpr(step)(w, True).jaxpr)

    gemm = shapes("gemm")
    assert gemm and all(s[:2] == (3, 3) for s in gemm), gemm
    assert any(s[:2] != (3, 3) for s in shapes("xla"))
