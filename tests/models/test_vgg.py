"""VGG19 features[0..25] (conv4_4 before ReLU) vs a torchvision-layout PyTorch VGG19 (docs/reference.md §2.3).

Tolerance: float32, 1e-4 relative to the output's scale (13 convs deep). He-scaled random weights.
"""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax.convert import vgg as convert_vgg  # noqa: E402
from scenimefy_jax.models.vgg import CONV4_4, VGG19Features, trim_params  # noqa: E402
from tests.torch_reference import cut_networks as ref  # noqa: E402
from tests.torch_reference.cut_training import VGG19  # noqa: E402


@pytest.fixture(scope="module")
def vgg():
    model = VGG19()
    ref.randomize_(model.features, seed=7)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return model.eval(), convert_vgg.convert_state_dict(sd).params


def test_conv4_4_matches_pytorch(vgg):
    model, params = vgg
    x = np.random.default_rng(0).uniform(0, 1, size=(2, 64, 48, 3)).astype(np.float32)
    with torch.no_grad():
        want = ref.nhwc(model.feature_mode(ref.nchw(x), CONV4_4))
        relu = ref.nhwc(model.feature_mode(ref.nchw(x), 3))
    net = VGG19Features()
    got, (tap,) = jax.jit(lambda p, x: net.apply({"params": p}, x, taps=(3,)))(trim_params(params, CONV4_4), x)
    assert got.shape == want.shape == (2, 8, 6, 512)
    assert np.min(want) < 0  # pre-ReLU output
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * np.max(np.abs(want)), rtol=0)
    np.testing.assert_allclose(np.asarray(tap), relu, atol=1e-4 * np.max(np.abs(relu)), rtol=0)


def test_whole_feature_stack_uses_all_converted_convs(vgg):
    model, params = vgg
    x = np.random.default_rng(1).uniform(0, 1, size=(1, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        want = ref.nhwc(model.feature_mode(ref.nchw(x), 36))
    got = VGG19Features(last_layer=36).apply({"params": params}, x)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * np.max(np.abs(want)), rtol=0)
