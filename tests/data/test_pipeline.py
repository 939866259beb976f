"""The grain input pipeline: official sampling semantics, determinism, resume, host sharding, corrupt files."""
import logging
import os

import numpy as np
import pytest

from scenimefy_jax.data import demo, pipeline

SIZE = 16


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_demo")
    demo.write_demo_dataset(root, n_photos=9, n_anime=5, n_pairs=7, size=24, seed=1)
    return root


@pytest.fixture(scope="module")
def sources(root):
    return pipeline.folder_sources(str(root / "unpaired_s2a"), str(root / "pair_s2a"))


def _stream(sources, n, *, seed=0, batch=2, workers=0, state=None, index=0, count=1):
    ds, plan = pipeline.make_train_dataset(sources, image_size=SIZE, global_batch=batch, seed=seed,
                                          num_workers=workers, process_index=index, process_count=count)
    it = iter(ds)
    if state is not None:
        it.set_state(state)
    out = [next(it) for _ in range(n)]
    st = it.get_state()
    if hasattr(it, "close"):
        it.close()
    return out, st, plan


def _equal(a, b):
    return len(a) == len(b) and all(
        set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def test_batches_follow_the_official_sampling(sources):
    out, _, plan = _stream(sources, 8)
    assert plan.epoch_length == 9 and plan.epoch_items == 8 and plan.steps_per_epoch == 4 and plan.pair_cycle == 6
    for batch in out:
        for k in pipeline.BATCH_KEYS:
            assert batch[k].shape == (2, SIZE, SIZE, 3) and batch[k].dtype == np.float32
            assert batch[k].min() >= -1.0 and batch[k].max() <= 1.0
    positions = np.concatenate([b["position"] for b in out])
    np.testing.assert_array_equal(positions, np.arange(16))
    items = [plan(p) for p in positions]
    # Epoch 1 (first 8 items, drop_last of 9): distinct photos of a permutation; epoch 2 reshuffles.
    assert len({i["photo"] for i in items[:8]}) == 8
    assert [i["photo"] for i in items[:8]] != [i["photo"] for i in items[8:]]
    # Pairs: a permutation cycle of 6 (7 pairs rounded down to the batch), restarted every epoch.
    assert len({i["pair"] for i in items[:6]}) == 6
    # Every tensor is exactly the decoded file with the official transform (flip only unpaired).
    b0, i0 = out[0], items[0]
    np.testing.assert_array_equal(b0["x"][0], pipeline.prepare(sources.photos.load(i0["photo"]), SIZE, i0["flip_x"]))
    np.testing.assert_array_equal(b0["y"][0], pipeline.prepare(sources.anime.load(i0["anime"]), SIZE, i0["flip_y"]))
    np.testing.assert_array_equal(b0["x_p"][0], pipeline.prepare(sources.pair_photos.load(i0["pair"]), SIZE, False))
    np.testing.assert_array_equal(b0["y_p"][0], pipeline.prepare(sources.pair_anime.load(i0["pair"]), SIZE, False))
    assert any(i["flip_x"] for i in items) and not all(i["flip_x"] for i in items)
    # Anime drawn with replacement: over 16 draws from 5 images some repeat within an epoch.
    assert len({i["anime"] for i in items[:8]}) < 8


def test_prepare_matches_official_transform():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    from PIL import Image

    expected = np.asarray(Image.fromarray(img).resize((SIZE, SIZE), Image.Resampling.BICUBIC))[:, ::-1]
    expected = (expected.astype(np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_array_equal(pipeline.prepare(img, SIZE, True), expected)


def test_deterministic_for_a_seed_and_independent_of_workers(sources):
    a, _, _ = _stream(sources, 5, seed=3)
    b, _, _ = _stream(sources, 5, seed=3)
    c, _, _ = _stream(sources, 5, seed=4)
    w, _, _ = _stream(sources, 5, seed=3, workers=2)
    assert _equal(a, b) and _equal(a, w)
    assert not _equal(a, c)


def test_resume_from_iterator_state(sources):
    full, _, _ = _stream(sources, 9)
    first, state, _ = _stream(sources, 4)
    rest, _, _ = _stream(sources, 5, state=state)
    assert _equal(first + rest, full)


def test_hosts_read_disjoint_shards_that_make_the_global_batch(sources):
    whole, _, _ = _stream(sources, 3, batch=4)
    h0, _, _ = _stream(sources, 3, batch=4, index=0, count=2)
    h1, _, _ = _stream(sources, 3, batch=4, index=1, count=2)
    for g, a, b in zip(whole, h0, h1):
        assert a["x"].shape[0] == b["x"].shape[0] == 2
        assert set(a["position"]) | set(b["position"]) == set(g["position"])
        assert not set(a["position"]) & set(b["position"])
        for k in pipeline.BATCH_KEYS:
            by_pos = {p: g[k][i] for i, p in enumerate(g["position"])}
            for host in (a, b):
                for i, p in enumerate(host["position"]):
                    np.testing.assert_array_equal(host[k][i], by_pos[p])


def test_corrupt_files_are_logged_by_name_and_skipped(root, tmp_path, caplog):
    import shutil

    bad_root = tmp_path / "data"
    shutil.copytree(root, bad_root)
    photos = sorted(os.listdir(bad_root / "unpaired_s2a" / "trainA"))
    garbage = bad_root / "unpaired_s2a" / "trainA" / photos[2]
    garbage.write_bytes(b"this is not a png")
    truncated = bad_root / "pair_s2a" / "trainB" / sorted(os.listdir(bad_root / "pair_s2a" / "trainB"))[1]
    truncated.write_bytes(truncated.read_bytes()[:60])
    sources = pipeline.folder_sources(str(bad_root / "unpaired_s2a"), str(bad_root / "pair_s2a"))
    with caplog.at_level(logging.WARNING):
        out, _, plan = _stream(sources, 12)
    logged = caplog.text
    assert str(garbage) in logged and str(truncated) in logged
    positions = np.concatenate([b["position"] for b in out])
    assert len(positions) == 24 and np.all(np.diff(positions) > 0)
    skipped = sorted(set(range(positions[-1] + 1)) - set(positions.tolist()))
    assert skipped, "some items use the broken files and must be skipped"
    for p in skipped:
        item = plan(p)
        assert item["photo"] == 2 or item["pair"] == 1
    for p in positions:
        item = plan(int(p))
        assert item["photo"] != 2 and item["pair"] != 1
    # Each broken file is reported once, not once per use.
    assert sum(str(garbage) in r.getMessage() for r in caplog.records) == 1


def test_packed_dataset_gives_the_same_stream(root, sources, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from scenimefy_jax.data import packed

    summary = packed.build_packed_dataset(str(root / "unpaired_s2a"), str(root / "pair_s2a"), str(tmp_path), workers=1)
    assert summary["counts"] == {"photos": 9, "anime": 5, "pair_photos": 7, "pair_anime": 7}
    records = pipeline.record_sources(summary["data_dir"])
    a, _, _ = _stream(sources, 4)
    b, _, _ = _stream(records, 4)
    assert _equal(a, b)


def test_packing_drops_unreadable_pairs_from_both_splits(root, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    import shutil

    from scenimefy_jax.data import packed

    bad_root = tmp_path / "data"
    shutil.copytree(root, bad_root)
    name = sorted(os.listdir(bad_root / "pair_s2a" / "trainA"))[3]
    (bad_root / "pair_s2a" / "trainA" / name).write_bytes(b"garbage")
    summary = packed.build_packed_dataset(str(bad_root / "unpaired_s2a"), str(bad_root / "pair_s2a"),
                                          str(tmp_path / "out"), workers=1)
    assert summary["counts"]["pair_photos"] == summary["counts"]["pair_anime"] == 6
    assert any(name in e for e in summary["skipped"]["pair_photos"])
    records = pipeline.record_sources(summary["data_dir"])
    for i in range(6):
        assert records.pair_photos.name(i).split()[-1] == records.pair_anime.name(i).split()[-1]
