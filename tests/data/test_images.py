"""Image reading and the official test-time pre/post-processing (docs/reference.md §1.7)."""
import io

import numpy as np
import pytest
from PIL import Image

from scenimefy_jax.data import images


def _save(img, path, **kw):
    img.save(path, **kw)
    return str(path)


def test_base4_size_uses_bankers_rounding():
    # 1082 / 4 = 270.5 -> Python round -> 270 -> 1080 (the official code's behaviour); 1086/4 = 271.5 -> 272.
    assert images.base4_size(1082, 1086) == (1080, 1088)
    assert images.base4_size(301, 457) == (300, 456)
    assert images.base4_size(256, 256) == (256, 256)


def test_round_to_base4_is_pil_bicubic_and_noop_when_aligned():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (301, 457, 3), dtype=np.uint8)
    want = np.asarray(Image.fromarray(img).resize((456, 300), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(images.round_to_base4(img), want)
    aligned = img[:300, :456]
    assert images.round_to_base4(aligned) is aligned


def test_too_small_image_is_refused_by_name():
    with pytest.raises(ValueError, match="tiny.png.*too small"):
        images.round_to_base4(np.zeros((5, 40, 3), np.uint8), "tiny.png")


def test_exif_orientation_is_applied(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(Image.fromarray(arr), tmp_path / "rot.jpg", exif=exif, quality=95)
    got = images.load_image(path)
    assert got.shape == (64, 40, 3)
    stored = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(got, np.rot90(stored, k=-1))


def test_sixteen_bit_grayscale_keeps_the_high_byte(tmp_path):
    values = np.array([[0, 255, 256, 32768], [40000, 65280, 65535, 1000]], np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I")
    got = images.load_image(path)
    np.testing.assert_array_equal(got[..., 0], (values >> 8).astype(np.uint8))
    np.testing.assert_array_equal(got[..., 0], got[..., 2])


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "1"])
def test_other_modes_become_rgb(tmp_path, mode):
    rng = np.random.default_rng(2)
    img = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).convert(mode)
    path = _save(img, tmp_path / ("x.tif" if mode == "CMYK" else "x.png"))
    got = images.load_image(path)
    assert got.shape == (20, 30, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.asarray(Image.open(path).convert("RGB")))


def test_alpha_is_dropped_like_the_official_code_or_composited(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # stored red under a fully transparent alpha
    path = _save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png")
    np.testing.assert_array_equal(images.load_image(path)[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(images.load_image(path, alpha_background=(255, 255, 255))[0, 0], [255, 255, 255])


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    good = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(good, format="JPEG")
    bad.write_bytes(good.getvalue()[:100])  # truncated JPEG
    with pytest.raises(images.ImageReadError, match="broken.jpg"):
        images.load_image(bad)
    with pytest.raises(images.ImageReadError, match="nothere.png"):
        images.load_image(tmp_path / "nothere.png")


def test_to_uint8_truncates_like_tensor2im():
    y = np.array([-2.0, -1.0, 0.0, 0.999, 1.0, 5.0], np.float32)
    want = ((np.clip(y, -1, 1) + 1) / 2 * 255).astype(np.uint8)  # 0.0 -> 127.5 -> 127 (not 128)
    np.testing.assert_array_equal(images.to_uint8(y), want)
    assert images.to_uint8(np.float32(0.0)) == 127


def test_to_model_input_range():
    x = images.to_model_input(np.array([0, 128, 255], np.uint8))
    np.testing.assert_allclose(x, [-1.0, 128 / 255 * 2 - 1, 1.0], atol=1e-7)
    assert x.dtype == np.float32
