"""The single-folder stream of StyleGAN fine-tuning: resize + centre crop, flip, epochs, hosts, resume."""
import logging

import numpy as np
import pytest
from PIL import Image

from scenimefy_jax.data import single_domain

SIZE = 8
N_IMAGES = 8


def _model_input(image):
    return (image.astype(np.float32) / 255 - 0.5) / 0.5  # ToTensor + Normalize(0.5, 0.5)


@pytest.mark.parametrize(
    "shape, resized_hw, top_left",
    [
        # 37 wide, 20 high: short side 20 -> 16, long side int(16 * 37 / 20) = int(29.6) = 29; crop
        # offsets round((16 - 16) / 2) = 0 and round((29 - 16) / 2) = round(6.5) = 6 (half to even).
        ((20, 37, 3), (16, 29), (0, 6)),
        # 23 wide, 45 high: 23 -> 16, int(16 * 45 / 23) = int(31.3) = 31; round(7.5) = 8 (half to even).
        ((45, 23, 3), (31, 16), (8, 0)),
        ((32, 32, 3), (16, 16), (0, 0)),  # square: resized, nothing to crop
    ],
)
def test_prepare_square_resizes_the_shorter_side_and_crops_the_centre(shape, resized_hw, top_left):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    (h, w), (top, left) = resized_hw, top_left
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.LANCZOS))
    expected = _model_input(resized[top : top + 16, left : left + 16])
    got = single_domain.prepare_square(image, 16, flip=False)
    assert got.shape == (16, 16, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(single_domain.prepare_square(image, 16, flip=True), expected[:, ::-1])


def test_prepare_square_leaves_an_image_of_the_right_size_unresampled():
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(single_domain.prepare_square(image, 16, flip=False), _model_input(image))


def _image(index):
    """Channel 0 says which image this is; channel 1 rises left to right, so a flip is visible."""
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[..., 0] = 20 * index
    image[..., 1] = 30 * np.arange(SIZE)[None, :]
    return image


def _decode(real):
    """`[S, S, 3]` in [-1, 1] -> (image index, flipped)."""
    pixels = np.round((real + 1) / 2 * 255).astype(int)
    ramp = pixels[0, :, 1]
    assert np.array_equal(ramp, 30 * np.arange(SIZE)) or np.array_equal(ramp, 30 * np.arange(SIZE)[::-1])
    return int(pixels[0, 0, 0]) // 20, bool(ramp[0] > ramp[-1])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("anime")
    (folder / "sub").mkdir()
    for i in range(N_IMAGES):  # PNG is lossless: the stream must give back exactly these pixels
        Image.fromarray(_image(i)).save(folder / ("sub" if i % 2 else ".") / f"{i:02d}.png")
    src = single_domain.folder_source(str(folder))
    # Sorted by path: the even images at the top, then sub/ with the odd ones.
    assert [int(p.rsplit("/", 1)[1][:2]) for p in src.paths] == [0, 2, 4, 6, 1, 3, 5, 7]
    return src


def _batches(source, n, *, batch=4, seed=0, flip=True, index=0, count=1, state=None):
    ds, plan = single_domain.make_dataset(source, image_size=SIZE, global_batch=batch, seed=seed, flip=flip,
                                          process_index=index, process_count=count)
    it = iter(ds)
    if state is not None:
        it.set_state(state)
    out = [next(it) for _ in range(n)]
    return out, it.get_state(), plan


def test_every_image_once_per_epoch_in_a_fresh_order(source):
    out, _, plan = _batches(source, 6)  # 3 epochs of 8 images in batches of 4
    assert plan.steps_per_epoch == 2 and plan.epoch_items == 8
    np.testing.assert_array_equal(np.concatenate([b["position"] for b in out]), np.arange(24))
    files = [int(p.rsplit("/", 1)[1][:2]) for p in source.paths]  # source index -> which _image
    order = []
    for b in out:
        assert b["real"].shape == (4, SIZE, SIZE, 3) and b["real"].dtype == np.float32
        for real, position in zip(b["real"], b["position"]):
            drawn, flipped = _decode(real)
            item = plan(int(position))
            assert drawn == files[item["index"]] and flipped == item["flip"]
            order.append(drawn)
    epochs = [order[i : i + 8] for i in range(0, 24, 8)]
    assert all(sorted(e) == list(range(N_IMAGES)) for e in epochs)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]  # reshuffled every epoch (P = 1/8! each)
    flips = [plan(p)["flip"] for p in range(24)]
    assert any(flips) and not all(flips)


def test_flip_off_never_flips(source):
    out, _, _ = _batches(source, 4, flip=False)
    assert not any(_decode(real)[1] for b in out for real in b["real"])


def test_an_epoch_that_does_not_fill_the_last_batch_drops_it():
    plan = single_domain.SinglePlan(seed=3, n_images=9, global_batch=4)
    assert plan.epoch_items == 8 and plan.steps_per_epoch == 2
    for epoch in range(3):
        drawn = [plan(epoch * 8 + t)["index"] for t in range(8)]
        assert len(set(drawn)) == 8 and set(drawn) <= set(range(9))
    with pytest.raises(ValueError, match="larger than the data set"):
        single_domain.SinglePlan(seed=3, n_images=3, global_batch=4)


def test_two_hosts_together_give_the_global_batch(source):
    whole, _, _ = _batches(source, 4)
    h0, _, _ = _batches(source, 4, index=0, count=2)
    h1, _, _ = _batches(source, 4, index=1, count=2)
    for g, a, b in zip(whole, h0, h1):
        assert a["real"].shape[0] == b["real"].shape[0] == 2
        assert not set(a["position"]) & set(b["position"])
        assert set(a["position"]) | set(b["position"]) == set(g["position"])
        by_position = {int(p): g["real"][i] for i, p in enumerate(g["position"])}
        for host in (a, b):
            for i, p in enumerate(host["position"]):
                np.testing.assert_array_equal(host["real"][i], by_position[int(p)])
    with pytest.raises(ValueError, match="not divisible"):
        single_domain.make_dataset(source, image_size=SIZE, global_batch=4, seed=0, process_index=0, process_count=3)


def test_resume_from_the_iterator_state_continues_exactly(source):
    full, _, _ = _batches(source, 7, seed=2)
    first, state, _ = _batches(source, 3, seed=2)
    rest, _, _ = _batches(source, 4, seed=2, state=state)
    assert len(first + rest) == len(full)
    for x, y in zip(first + rest, full):
        np.testing.assert_array_equal(x["position"], y["position"])
        np.testing.assert_array_equal(x["real"], y["real"])


def test_an_unreadable_file_is_skipped_and_named_once(tmp_path, caplog):
    for i in range(5):
        Image.fromarray(_image(i)).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "02.png").write_bytes(b"not a png")
    source = single_domain.folder_source(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        out, _, plan = _batches(source, 6, batch=2)
    positions = np.concatenate([b["position"] for b in out])
    assert all(plan(int(p))["index"] != 2 for p in positions)
    skipped = sorted(set(range(int(positions[-1]) + 1)) - set(positions.tolist()))
    assert skipped and all(plan(p)["index"] == 2 for p in skipped)
    assert sum("02.png" in r.getMessage() for r in caplog.records) == 1
    assert not any(_decode(real)[0] == 2 for b in out for real in b["real"])
