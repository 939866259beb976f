"""`Translator`: loading both checkpoint forms, batching, input validation, compilation reuse."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax import convert, model_io  # noqa: E402
from scenimefy_jax.inference import Translator  # noqa: E402
from tests.torch_reference import cut_networks as ref  # noqa: E402


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("translator")
    pth = folder / "net_G.pth"
    torch.save(ref.randomize_(ref.ResnetGenerator(), seed=11).state_dict(), pth)
    converted = convert.convert_file(pth)
    orbax_dir = model_io.save_model(
        folder / "orbax", kind="translator", params=converted.params, architecture=converted.architecture
    )
    return str(pth), orbax_dir


@pytest.fixture(scope="module")
def translator(checkpoints):
    return Translator.from_checkpoint(checkpoints[0], batch_size=4)


def _images():
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(32, 40, 3), (32, 40, 3), (24, 24, 3), (32, 40, 3)]]


def test_pth_and_orbax_directory_give_identical_results(checkpoints, translator):
    image = _images()[0]
    from_dir = Translator.from_checkpoint(checkpoints[1])
    np.testing.assert_array_equal(translator(image), from_dir(image))


def test_lists_keep_input_order_and_match_single_calls(translator):
    images = _images()
    batched = translator(images)
    assert len(batched) == len(images)
    for image, out in zip(images, batched):
        assert out.dtype == np.uint8 and out.shape == image.shape
        # Padding a batch never leaks into results; batch size changes only float rounding (XLA picks
        # other convolution loops), which can move a truncated value by one level.
        diff = np.abs(out.astype(int) - translator(image).astype(int))
        assert diff.max() <= 1 and np.mean(diff) < 0.01


def test_one_compilation_per_shape(translator):
    # A translator of its own: the module's shared one has compiled whatever earlier tests ran.
    fresh = Translator(translator.params, translator.architecture, batch_size=4)
    images = _images()
    fresh(images)  # three 32x40 images padded to a batch of 4, one 24x24 alone: two programs
    assert fresh._forward._cache_size() == 2
    fresh(images[0])  # a single 32x40 image is a batch of 1: a third program
    assert fresh._forward._cache_size() == 3
    fresh(images)
    fresh(images[0])
    fresh(images[2])
    assert fresh._forward._cache_size() == 3


def test_grayscale_and_rgba_arrays_are_accepted(translator):
    gray = np.full((16, 16), 90, np.uint8)
    np.testing.assert_array_equal(translator(gray), translator(np.stack([gray] * 3, axis=-1)))
    rgba = np.concatenate([np.full((16, 16, 3), 90, np.uint8), np.zeros((16, 16, 1), np.uint8)], axis=-1)
    np.testing.assert_array_equal(translator(rgba), translator(rgba[..., :3]))


def test_bad_arrays_are_refused(translator):
    with pytest.raises(TypeError, match="uint8"):
        translator(np.zeros((16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        translator(np.zeros((16, 16, 2), np.uint8))


def test_max_side_and_bfloat16(checkpoints):
    image = np.random.default_rng(6).integers(0, 256, (60, 200, 3), dtype=np.uint8)
    small = Translator.from_checkpoint(checkpoints[1], max_side=100)
    assert small(image).shape == (32, 100, 3)  # 60x200 -> 30x100 -> base-4 rounding -> 32x100
    f32 = Translator.from_checkpoint(checkpoints[1])(image).astype(int)
    bf16 = Translator.from_checkpoint(checkpoints[1], dtype="bfloat16")(image).astype(int)
    assert np.mean(np.abs(f32 - bf16)) < 6  # bfloat16 compute: a few levels on average, not garbage


def test_wrong_kind_of_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a scenimefy_jax model directory"):
        Translator.from_checkpoint(tmp_path)
