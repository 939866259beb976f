"""oneDNN's convolution kernel gradient as an XLA:CPU custom call (scenimefy_jax/kernels/onednn.py).

The values are checked against a kernel gradient written here in numpy (a sum over the batch and the
output positions of window^T @ dy, float64); `tests/models/test_layers.py` checks `conv2d`'s "onednn"
mode against XLA's own gradients to first and second order. Where oneDNN is not installed these tests
skip, which fails a CI run (tests/ci_plugin.py): CI installs it from requirements.txt.
"""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scenimefy_jax.kernels import onednn
from scenimefy_jax.models import layers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_onednn = pytest.mark.skipif(not onednn.available(), reason=f"oneDNN kernel: {onednn.status()[1]}")


def _numpy_wgrad(x, dy, k, padding, stride):
    (pt, pb), (pl, pr) = padding
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    _, ho, wo, _ = dy.shape
    dw = np.zeros((k[0], k[1], x.shape[3], dy.shape[3]))
    for i in range(k[0]):
        for j in range(k[1]):
            win = xp[:, i : i + stride[0] * (ho - 1) + 1 : stride[0], j : j + stride[1] * (wo - 1) + 1 : stride[1]]
            dw[i, j] = np.einsum("bhwc,bhwd->cd", win, dy.astype(np.float64))
    return dw


@needs_onednn
@pytest.mark.parametrize("shape,k,c_out,padding,stride", [
    ((3, 9, 11, 16), (3, 3), 24, ((1, 1), (1, 1)), (1, 1)),  # SAME 3x3, batch 3
    ((1, 10, 10, 16), (3, 3), 32, ((0, 0), (0, 0)), (1, 1)),  # VALID (a ResnetBlock's taps)
    ((2, 12, 10, 16), (4, 4), 32, ((1, 2), (2, 1)), (2, 2)),  # PatchGAN 4x4 stride 2, uneven padding
    ((1, 8, 9, 3), (7, 7), 64, ((3, 3), (3, 3)), (1, 1)),  # 3 input channels, 7x7
    ((2, 7, 7, 20), (1, 1), 5, ((0, 0), (0, 0)), (2, 1)),  # 1x1, stride in one axis only
])
def test_conv_wgrad_matches_numpy(shape, k, c_out, padding, stride):
    # Tolerance: 2e-6 of the largest entry, float32 accumulation over at most a few hundred products.
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    (pt, pb), (pl, pr) = padding
    ho = (shape[1] + pt + pb - k[0]) // stride[0] + 1
    wo = (shape[2] + pl + pr - k[1]) // stride[1] + 1
    dy = rng.normal(size=(shape[0], ho, wo, c_out)).astype(np.float32)
    got = np.asarray(jax.jit(lambda a, b: onednn.conv_wgrad(a, b, k, padding, stride))(x, dy))
    want = _numpy_wgrad(x, dy, k, padding, stride)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


@needs_onednn
def test_conv_wgrad_is_deterministic():
    # The bit-exact resume test needs a run to repeat itself exactly: same inputs, same bits.
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 34, 34, 64)), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(3, 32, 32, 64)), jnp.float32)
    fn = jax.jit(lambda a, b: onednn.conv_wgrad(a, b, (3, 3), ((0, 0), (0, 0)), (1, 1)))
    first = np.asarray(fn(x, dy))
    for _ in range(3):
        np.testing.assert_array_equal(np.asarray(fn(x, dy)), first)


def _custom_calls(fn, *args) -> int:
    return jax.jit(fn).lower(*args).as_text().count(onednn.TARGET)


@needs_onednn
def test_auto_takes_onednn_for_wide_convolutions_on_one_device():
    x, w = jnp.ones((1, 8, 8, 16)), jnp.ones((3, 3, 16, 16))
    grad = lambda mode, k: jax.grad(  # noqa: E731
        lambda w: jnp.sum(layers.conv2d(x, w, ((1, 1), (1, 1)), mode)), argnums=0)
    assert _custom_calls(grad("auto", w), w) == 1
    assert _custom_calls(grad("gemm", w), w) == 0
    narrow = jnp.ones((3, 3, 16, 3))  # 3 output channels: XLA's own rule (WGRAD_MIN_CHANNELS)
    assert _custom_calls(grad("auto", narrow), narrow) == 0
    # The transposed (input-dilated) convolutions keep the tap GEMMs.
    up = lambda w: jnp.sum(layers.conv2d(x, w, ((2, 2), (2, 2)), "auto", lhs_dilation=2))  # noqa: E731
    assert _custom_calls(jax.grad(up), w) == 0
    with pytest.raises(ValueError, match="input dilation"):
        layers.conv2d(x, w, ((2, 2), (2, 2)), "onednn", lhs_dilation=2)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "JAX_PLATFORMS": "cpu", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=300)


_COUNT = """
    import jax, jax.numpy as jnp
    from scenimefy_jax.kernels import onednn
    from scenimefy_jax.models import layers
    x, w = jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 16, 16))
    f = jax.grad(lambda w: jnp.sum(layers.conv2d(x, w, ((1, 1), (1, 1)))))
    print("calls", jax.jit(f).lower(w).as_text().count(onednn.TARGET), onednn.status()[1])
    print("value", float(f(w)[0, 0, 0, 0]))
"""


@needs_onednn
def test_falls_back_when_switched_off_or_on_several_devices():
    off = _run(_COUNT, SCENIMEFY_JAX_ONEDNN="0")
    assert off.returncode == 0, off.stderr
    assert "calls 0 switched off by SCENIMEFY_JAX_ONEDNN=0" in off.stdout
    # 2 devices: the custom call has no rule for a batch split over devices, so conv2d keeps the taps.
    two = _run(_COUNT, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert two.returncode == 0, two.stderr
    assert "calls 0 " in two.stdout
    on = _run(_COUNT)
    assert on.returncode == 0, on.stderr
    assert "calls 1 built" in on.stdout
    # The same gradient on every path: tap (0, 0) of a SAME 3x3 sees 7 x 7 pixels of each of 2 images.
    for run in (off, two, on):
        assert "value 98.0" in run.stdout, run.stdout


@needs_onednn
def test_a_failed_build_warns_once_and_falls_back(tmp_path):
    run = _run(_COUNT, SCENIMEFY_JAX_KERNEL_CACHE=str(tmp_path / "cache"), CXX="/bin/false")
    assert run.returncode == 0, run.stderr
    assert "calls 0 /bin/false failed on conv_wgrad.cc (exit 1)" in run.stdout
    assert run.stderr.count("oneDNN kernel gradient unavailable, using the tap GEMMs") == 1
    assert not [p for p in (tmp_path / "cache").iterdir()]  # no half-written library left behind


@needs_onednn
def test_build_is_cached_by_key(tmp_path):
    include, lib = onednn.find_onednn()
    compiler = onednn._compiler()
    first = onednn.build(include, lib, compiler, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert onednn.build(include, lib, compiler, tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]
