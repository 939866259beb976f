"""upfirdn2d against a plain-PyTorch reference (tests/torch_reference/stylegan2.py) and a closed form.

Tolerance: float32, 1e-5 absolute on O(1) inputs (only the summation order differs).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax.models.upfirdn import make_kernel, separable_taps, upfirdn2d  # noqa: E402
from tests.torch_reference import stylegan2 as ref  # noqa: E402

CASES = [  # (up, down, pad, kernel scale) as used by StyleGAN2, plus odd pads and crops
    (1, 1, (1, 1), 4.0),  # ModulatedConv2d upsample blur
    (2, 1, (2, 1), 4.0),  # ToRGB skip Upsample
    (1, 1, (2, 2), 1.0),  # D conv2 blur
    (1, 2, (1, 1), 1.0),  # blur + decimate
    (2, 2, (0, 0), 1.0),
    (1, 1, (-1, 2), 1.0),  # negative pad = crop
    (3, 2, (-2, -1), 1.0),
    (2, 3, (3, -2), 1.0),
]


@pytest.mark.parametrize("up,down,pad,scale", CASES)
def test_matches_pytorch(up, down, pad, scale):
    rng = np.random.default_rng(up * 10 + down)
    x = rng.standard_normal((2, 11, 9, 3)).astype(np.float32)  # odd, non-square
    kernel = make_kernel([1, 3, 3, 1]) * scale
    want = ref.nhwc(ref.upfirdn2d(ref.nchw(x), torch.from_numpy(kernel), up, down, pad))
    got = np.asarray(upfirdn2d(x, kernel, up, down, pad))
    assert got.shape == want.shape
    n = 11
    assert got.shape[1] == (n * up + pad[0] + pad[1] - 4 + down) // down  # docs/reference.md §3.1 length formula
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_asymmetric_and_non_separable_kernels_are_true_convolutions():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 7, 2)).astype(np.float32)
    asym = np.outer([1.0, 2.0, 5.0], [3.0, 1.0, 0.5]).astype(np.float32)  # separable, not symmetric
    general = rng.standard_normal((3, 3)).astype(np.float32)  # rank 3: depthwise-conv path
    assert separable_taps(asym) is not None and separable_taps(general) is None
    for kernel in (asym, general):
        want = ref.nhwc(ref.upfirdn2d(ref.nchw(x), torch.from_numpy(kernel), 2, 1, (1, -1)))
        np.testing.assert_allclose(np.asarray(upfirdn2d(x, kernel, 2, 1, (1, -1))), want, atol=1e-5, rtol=0)


def test_impulse_response_is_the_flipped_kernel_closed_form():
    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, 2, 2, 0] = 1.0
    kernel = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    # true convolution of a unit impulse with VALID padding 1: y[i, j] = k[i, j] around the centre
    got = np.asarray(upfirdn2d(x, kernel, pad=(1, 1)))[0, 1:4, 1:4, 0]
    np.testing.assert_array_equal(got, kernel)
