"""Parity of the JAX translator with a PyTorch ResnetGenerator built from docs/reference.md §1 (same weights).

Tolerance: float32 throughout; outputs (tanh, in [-1, 1]) agree to 1e-4 absolute, the five encoder
taps to 1e-4 relative to each tap's scale. Weights are He-scaled random values (not CUT's 0.02 init),
so activations are O(1) and a wrong layer cannot hide under tiny numbers.
"""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax.convert import translator as convert_translator  # noqa: E402
from scenimefy_jax.models.translator import NCE_LAYERS, ResnetGenerator  # noqa: E402
from tests.torch_reference import cut_networks as ref  # noqa: E402


def _state_dict(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def torch_generator():
    torch.manual_seed(0)
    return ref.randomize_(ref.ResnetGenerator(), seed=0).eval()


@pytest.fixture(scope="module")
def jax_params(torch_generator):
    return convert_translator.convert_state_dict(_state_dict(torch_generator)).params


@pytest.mark.parametrize("shape", [(1, 256, 256), (2, 68, 100)], ids=["256x256", "2x68x100"])
def test_output_and_taps_match_pytorch(torch_generator, jax_params, shape):
    b, h, w = shape
    x = np.random.default_rng(h).uniform(-1, 1, size=(b, h, w, 3)).astype(np.float32)
    with torch.no_grad():
        want_img = ref.nhwc(torch_generator(ref.nchw(x)))
        want_taps = [ref.nhwc(t) for t in torch_generator(ref.nchw(x), list(NCE_LAYERS), encode_only=True)]
    model = ResnetGenerator()
    img, taps = jax.jit(lambda p, x: model.apply({"params": p}, x, NCE_LAYERS))(jax_params, x)
    enc = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode))(jax_params, x)

    assert np.std(want_img) > 0.1, "reference output is degenerate; weights too small"
    np.testing.assert_allclose(np.asarray(img), want_img, atol=1e-4, rtol=0)
    for index, got, got_enc, want in zip(NCE_LAYERS, taps, enc, want_taps):
        assert got.shape == want.shape, index
        scale = float(np.max(np.abs(want)))
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * scale, rtol=0, err_msg=f"tap {index}")
        np.testing.assert_allclose(np.asarray(got_enc), want, atol=1e-4 * scale, rtol=0, err_msg=f"tap {index}")


def test_bfloat16_compute_stays_close(jax_params):
    x = np.random.default_rng(3).uniform(-1, 1, size=(1, 64, 64, 3)).astype(np.float32)
    f32 = ResnetGenerator().apply({"params": jax_params}, x)
    bf16 = ResnetGenerator(dtype=jax.numpy.bfloat16).apply({"params": jax_params}, x)
    assert bf16.dtype == np.float32
    err = float(np.mean(np.abs(np.asarray(f32) - np.asarray(bf16))))
    assert err < 0.05, err  # bfloat16 has 8 mantissa bits; mean error well under 2% of the range


def test_parameter_count_matches_the_release():
    params = jax.eval_shape(lambda: ResnetGenerator().init(jax.random.key(0), np.zeros((1, 16, 16, 3))))
    assert sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(params)) == 11_378_179
