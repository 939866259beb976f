"""Parity of the PatchGAN discriminators D (3-ch) and D_p (6-ch) with a PyTorch NLayerDiscriminator
written from docs/reference.md §2.3 (same converted weights).

Tolerance: float32; scores agree to 1e-4 relative to the output's scale. Weights are He-scaled random
values so activations stay O(1).
"""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax.convert import patchgan as convert_patchgan  # noqa: E402
from scenimefy_jax.models.discriminator import PatchGANDiscriminator  # noqa: E402
from tests.torch_reference import cut_networks as ref  # noqa: E402
from tests.torch_reference.cut_training import NLayerDiscriminator  # noqa: E402


def _sd(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "input_nc,shape,expected_out",
    [(3, (1, 256, 256), (30, 30)), (6, (2, 70, 54), None)],
    ids=["D-256", "D_p-2x70x54"],
)
def test_scores_match_pytorch(input_nc, shape, expected_out):
    torch_d = ref.randomize_(NLayerDiscriminator(input_nc), seed=input_nc).eval()
    convert = convert_patchgan.convert_discriminator if input_nc == 3 else convert_patchgan.convert_pair_discriminator
    converted = convert(_sd(torch_d))
    assert converted.architecture["input_nc"] == input_nc and converted.architecture["ndf"] == 64
    b, h, w = shape
    x = np.random.default_rng(h).uniform(-1, 1, size=(b, h, w, input_nc)).astype(np.float32)
    with torch.no_grad():
        want = ref.nhwc(torch_d(ref.nchw(x)))
    got = np.asarray(jax.jit(PatchGANDiscriminator().apply)({"params": converted.params}, x))
    assert got.shape == want.shape
    if expected_out:
        assert got.shape[1:3] == expected_out
    assert np.std(want) > 1e-2
    np.testing.assert_allclose(got, want, atol=1e-4 * np.max(np.abs(want)), rtol=0)


@pytest.mark.parametrize("input_nc,count", [(3, 2_764_737), (6, 2_767_809)])
def test_parameter_counts_match_the_spec(input_nc, count):
    params = jax.eval_shape(
        lambda: PatchGANDiscriminator().init(jax.random.key(0), np.zeros((1, 64, 64, input_nc), np.float32))
    )
    assert sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(params)) == count
