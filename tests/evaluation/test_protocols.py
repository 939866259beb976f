"""The FID input protocols against torch and PIL computed here (docs/reference.md §6.1).

`pytorch_fid` must equal torch's `F.interpolate(bilinear, align_corners=False)` on `x / 255`, then `2x - 1`,
within 1e-6 (measured: 2.4e-7, two ulps of values in [-1, 1], from float32 matrix products vs torch's
two-tap lerp). That needs torch's own float32 interpolation weights, checked bit for bit; weights computed
in float64 would be off by up to 1.6e-4 here. The antialiased variant is shown to differ when shrinking,
so the test would catch an antialiasing resize.
`clean` must equal PIL's per-channel float ("F") bicubic resize exactly, and is shown to differ from PIL's
uint8 RGB bicubic resize: that one rounds its output to integers and uses fixed-point filter weights,
the quantisation clean-fid avoids by resizing in float.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from scenimefy_jax.evaluation.protocols import INPUT_SIZE, PROTOCOLS, preprocess, preprocess_batch
from scenimefy_jax.models.resize import interpolation_matrix

TOLERANCE = 1e-6


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _torch_pytorch_fid(image, antialias=False):
    x = torch.from_numpy(image).permute(2, 0, 1)[None].to(torch.float32) / 255.0
    x = torch.nn.functional.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                                        align_corners=False, antialias=antialias)
    return (2 * x - 1)[0].permute(1, 2, 0).numpy()


def _pil_float_bicubic(image):
    channels = [np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F")
                           .resize((INPUT_SIZE, INPUT_SIZE), resample=Image.BICUBIC)) for c in range(3)]
    return (np.clip(np.stack(channels, -1), 0, 255) - 128) / 128


@pytest.mark.parametrize("size_in", [7, 256, 300, 384, 512, 1080])
def test_float32_weights_are_torchs(size_in):
    # One-hot rows through torch's float32 kernel give its weight matrix, column by column.
    one_hot = torch.eye(size_in)[:, None, None, :].expand(size_in, 1, 2, size_in)
    torch_weights = torch.nn.functional.interpolate(one_hot, size=(2, INPUT_SIZE), mode="bilinear",
                                                    align_corners=False)[:, 0, 0, :].numpy().T
    np.testing.assert_array_equal(interpolation_matrix(size_in, INPUT_SIZE, float32_coordinates=True),
                                  torch_weights)


@pytest.mark.parametrize("h, w", [(256, 256), (384, 512), (512, 384), (1080, 1080), (299, 299)],
                         ids=["upsample", "shrink_wide", "shrink_tall", "shrink_crop", "identity"])
def test_pytorch_fid_matches_torch_bilinear(h, w):
    image = _image(h, w, seed=h + w)
    out = preprocess(image, "pytorch_fid")
    assert out.shape == (INPUT_SIZE, INPUT_SIZE, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, _torch_pytorch_fid(image), rtol=0, atol=TOLERANCE)
    assert out.min() >= -1.0 and out.max() <= 1.0
    if (h, w) == (299, 299):  # passes through: just the value mapping
        np.testing.assert_array_equal(out, 2 * (image.astype(np.float32) / np.float32(255)) - 1)


def test_pytorch_fid_has_no_antialias_when_shrinking():
    image = _image(512, 384, seed=3)
    difference = np.abs(preprocess(image, "pytorch_fid") - _torch_pytorch_fid(image, antialias=True)).max()
    assert difference > 0.1


@pytest.mark.parametrize("h, w", [(256, 256), (512, 384), (299, 299)])
def test_clean_matches_pil_float_bicubic(h, w):
    image = _image(h, w, seed=h * w)
    out = preprocess(image, "clean")
    assert out.shape == (INPUT_SIZE, INPUT_SIZE, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, _pil_float_bicubic(image).astype(np.float32))
    assert out.min() >= -1.0 and out.max() <= 127 / 128


def test_clean_differs_from_uint8_pil_resize():
    image = _image(512, 384, seed=5)
    quantised = np.asarray(Image.fromarray(image).resize((INPUT_SIZE, INPUT_SIZE), resample=Image.BICUBIC))
    difference = np.abs(preprocess(image, "clean") - (quantised.astype(np.float32) - 128) / 128)
    assert difference.max() > 1 / 256  # more than half a uint8 step: not only the final rounding
    assert difference.mean() > 1e-3


def test_protocols_differ_from_each_other():
    image = _image(256, 256, seed=6)
    assert np.abs(preprocess(image, "pytorch_fid") - preprocess(image, "clean")).max() > 0.05


def test_batch_and_errors():
    images = [_image(256, 256, 7), _image(300, 200, 8)]
    for protocol in PROTOCOLS:
        batch = preprocess_batch(images, protocol)
        assert batch.shape == (2, INPUT_SIZE, INPUT_SIZE, 3) and batch.dtype == np.float32
        np.testing.assert_array_equal(batch[1], preprocess(images[1], protocol))
        assert preprocess_batch(np.stack([images[0]] * 2), protocol).shape == (2, INPUT_SIZE, INPUT_SIZE, 3)
    with pytest.raises(ValueError, match="pytorch_fid, clean"):
        preprocess(images[0], "legacy_tensorflow")
    with pytest.raises(ValueError, match="uint8"):
        preprocess(images[0].astype(np.float32), "clean")
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        preprocess(images[0][..., :1], "pytorch_fid")
