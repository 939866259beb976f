"""Features through both input protocols, from 256x256 uint8 images, against PyTorch.

pytorch_fid: `torch.nn.functional.interpolate(299, bilinear, align_corners=False)` of `x / 255`, then
`2x - 1`; clean: PIL's bicubic on each float32 channel (clean-fid's resize), clipped to [0, 255], then
`(x - 128) / 128`; both into the PyTorch FID Inception of tests/torch_reference with random weights and
BatchNorm statistics, converted for JAX. Tolerance: 1e-4 of the features' largest magnitude (measured
7e-7 for both protocols: float32 rounding through 94 layers).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from scenimefy_jax.convert import get_converter
from scenimefy_jax.evaluation import protocols
from scenimefy_jax.evaluation.features import InceptionFeatures, features_of_images
from tests.torch_reference import fid_inception as ref

N_IMAGES = 6  # runs as one batch padded to 8, the program the job tests compile too


@pytest.fixture(scope="module")
def networks():
    model = ref.randomize_(ref.FIDInceptionV3(), seed=11)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    params = get_converter("fid_inception").convert(state, "<test>").params
    return model, InceptionFeatures(params, batch_size=8)


@pytest.fixture(scope="module")
def photos():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (N_IMAGES, 16, 16, 3)).astype(np.uint8)
    # Smooth content with sharp edges (a blocky upsampling plus noise): resizers differ most at edges.
    images = [np.asarray(Image.fromarray(b).resize((256, 256), Image.NEAREST)) for b in base]
    return [np.clip(im.astype(int) + rng.integers(-20, 21, im.shape), 0, 255).astype(np.uint8) for im in images]


def _torch_features(model, inputs_nchw):
    with torch.no_grad():
        return model(inputs_nchw).numpy()


def _pytorch_fid_inputs(images):
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1


def _clean_inputs(images):
    out = []
    for im in images:
        channels = [np.asarray(Image.fromarray(im[..., c].astype(np.float32), mode="F").resize((299, 299),
                                                                                              Image.BICUBIC))
                    for c in range(3)]
        out.append((np.clip(np.stack(channels, -1), 0, 255) - 128) / 128)
    return torch.from_numpy(np.stack(out).astype(np.float32)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("protocol, torch_inputs", [("pytorch_fid", _pytorch_fid_inputs), ("clean", _clean_inputs)])
def test_features_through_each_protocol_match_pytorch(networks, photos, protocol, torch_inputs):
    model, inception = networks
    keys, ours = features_of_images(enumerate(photos), inception, protocol)
    assert keys == list(range(N_IMAGES)) and ours.shape == (N_IMAGES, 2048) and ours.dtype == np.float32
    expected = _torch_features(model, torch_inputs(photos))
    scale = np.abs(expected).max()
    assert np.abs(ours - expected).max() <= 1e-4 * scale


def test_the_two_protocols_give_different_features(networks, photos):
    _, inception = networks
    _, a = features_of_images(enumerate(photos), inception, "pytorch_fid")
    _, b = features_of_images(enumerate(photos), inception, "clean")
    assert np.abs(a - b).max() > 1e-3 * np.abs(a).max()  # resizing alone moves the features


def test_any_batch_size_gives_the_same_features(networks, photos):
    _, inception = networks
    inputs = np.stack([protocols.preprocess(p, "pytorch_fid") for p in photos])
    whole = inception(inputs)
    small = InceptionFeatures(inception.params, batch_size=3)  # two batches of 3: another program
    np.testing.assert_allclose(small(inputs), whole, rtol=0, atol=1e-5 * np.abs(whole).max())
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        inception(inputs[0])
