"""Unreadable training data: a few bad files are skipped and counted; too many in a row stop the stream
with one error naming the folder, in seconds, instead of an endless search for a readable item."""
import contextlib
import logging
import os
import shutil
import signal

import numpy as np
import pytest

from scenimefy_jax.data import demo, pipeline, single_domain

SIZE = 8


@contextlib.contextmanager
def deadline(seconds):
    """Fails the test instead of hanging when the body takes longer than `seconds` (SIGALRM)."""
    def fail(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s: the stream hangs")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("readable")
    demo.write_demo_dataset(root, n_photos=6, n_anime=4, n_pairs=4, size=16, seed=2)
    return root


def _copy_with_corrupt(root, tmp_path, folder, names=None):
    """A copy of the demo data set whose images in `folder` (all of them, or `names`) are not images."""
    data = tmp_path / "data"
    shutil.copytree(root, data)
    for name in sorted(os.listdir(data / folder)):
        if names is None or name in names:
            (data / folder / name).write_bytes(b"not a png")
    return data


def _sources(data):
    return pipeline.folder_sources(str(data / "unpaired_s2a"), str(data / "pair_s2a"))


def _iterator(sources, **kw):
    ds, plan = pipeline.make_train_dataset(sources, image_size=SIZE, global_batch=2, seed=0,
                                          process_index=0, process_count=1, **kw)
    return iter(ds), plan


def test_all_photos_corrupt_stops_in_seconds_naming_the_folder(root, tmp_path):
    data = _copy_with_corrupt(root, tmp_path, "unpaired_s2a/trainA")
    it, _ = _iterator(_sources(data), max_unreadable_in_a_row=10)
    with deadline(30), pytest.raises(pipeline.UnreadableDataError) as raised:
        next(it)
    message = str(raised.value)
    assert "\n" not in message
    assert str(data / "unpaired_s2a" / "trainA") in message
    assert str(data / "pair_s2a") not in message  # only the folder whose files failed
    assert "11 items in a row" in message and "11 items skipped" in message


def test_the_default_limit_stops_a_data_set_smaller_than_it(root, tmp_path):
    # 6 photos, all corrupt, limit 100: the stream is infinite (epochs repeat), so the count passes 100.
    data = _copy_with_corrupt(root, tmp_path, "unpaired_s2a/trainA")
    it, _ = _iterator(_sources(data))
    with deadline(60), pytest.raises(pipeline.UnreadableDataError, match="101 items in a row"):
        next(it)


def test_the_limit_counts_consecutive_items(root, tmp_path):
    # Half the photos corrupt: the runs of skipped items come from the plan. A limit equal to the longest
    # run met lets the stream through; one less stops it exactly at that run.
    data = _copy_with_corrupt(root, tmp_path, "unpaired_s2a/trainA",
                              names={"photo_00001.png", "photo_00002.png", "photo_00004.png"})
    sources = _sources(data)
    _, plan = _iterator(sources)
    good = [p for p in range(120) if plan(p)["photo"] not in (1, 2, 4)]
    n_batches = len(good) // 2
    last = good[2 * n_batches - 1]  # the last item these batches take
    runs, run = [], 0
    for p in range(last):
        run = run + 1 if plan(p)["photo"] in (1, 2, 4) else 0
        runs.append(run)
    longest = max(runs)
    assert longest >= 2  # three of six photos bad: runs of two or more occur
    it, _ = _iterator(sources, max_unreadable_in_a_row=longest)
    with deadline(30):
        batches = [next(it) for _ in range(n_batches)]
    assert max(int(b["skipped"].max()) for b in batches) == longest
    it, _ = _iterator(sources, max_unreadable_in_a_row=longest - 1)
    with deadline(30), pytest.raises(pipeline.UnreadableDataError, match=f" {longest} items in a row"):
        for _ in range(n_batches):
            next(it)


def test_a_few_corrupt_files_are_skipped_and_counted(root, tmp_path, caplog):
    data = _copy_with_corrupt(root, tmp_path, "unpaired_s2a/trainB", names={"anime_00001.png"})
    it, plan = _iterator(_sources(data))
    with caplog.at_level(logging.WARNING), deadline(30):
        batches = [next(it) for _ in range(12)]
    positions = np.concatenate([b["position"] for b in batches])
    expected = [p for p in range(positions[-1] + 1) if plan(p)["anime"] != 1]
    np.testing.assert_array_equal(positions, expected)  # the stream goes on past every bad item
    # Each row says how many items were dropped right before it; together: every skipped position.
    assert sum(int(np.sum(b["skipped"])) for b in batches) == positions[-1] + 1 - len(positions) > 0
    for b in batches:
        for p, s in zip(b["position"], b["skipped"]):
            assert all(plan(q)["anime"] == 1 for q in range(p - s, p)) and (p - s == 0 or plan(p - s - 1)["anime"] != 1)
    assert sum("anime_00001.png" in r.getMessage() for r in caplog.records) == 1


def test_worker_processes_give_the_same_counts_and_the_same_error(root, tmp_path):
    data = _copy_with_corrupt(root, tmp_path, "unpaired_s2a/trainB", names={"anime_00001.png"})
    sources = _sources(data)
    with deadline(120):
        it0, _ = _iterator(sources)
        it2, _ = _iterator(sources, num_workers=2)
        a, b = [next(it0) for _ in range(4)], [next(it2) for _ in range(4)]
        it2.close()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["position"], y["position"])
        np.testing.assert_array_equal(x["skipped"], y["skipped"])
        np.testing.assert_array_equal(x["y"], y["y"])
    bad = _copy_with_corrupt(root, tmp_path / "all", "pair_s2a/trainB")
    it, _ = _iterator(_sources(bad), num_workers=2, max_unreadable_in_a_row=5)
    with deadline(120), pytest.raises(pipeline.UnreadableDataError, match="6 items in a row") as raised:
        next(it)
    it.close()
    assert str(bad / "pair_s2a" / "trainB") in str(raised.value)


def test_a_restored_iterator_continues_the_counts_exactly(root, tmp_path):
    data = _copy_with_corrupt(root, tmp_path, "unpaired_s2a/trainB", names={"anime_00001.png"})
    sources = _sources(data)
    it, _ = _iterator(sources)
    with deadline(30):
        straight = [next(it) for _ in range(8)]
        it, _ = _iterator(sources)
        [next(it) for _ in range(3)]
        state = it.get_state()
        it, _ = _iterator(sources)
        it.set_state(state)
        resumed = [next(it) for _ in range(5)]
    for x, y in zip(straight[3:], resumed):
        np.testing.assert_array_equal(x["position"], y["position"])
        np.testing.assert_array_equal(x["skipped"], y["skipped"])


def test_the_loop_reports_the_skipped_items(root, tmp_path, caplog):
    """`data/skipped_items` per report interval in metrics.jsonl, the run's total logged at the end."""
    import json

    from scenimefy_jax.training import loop
    from tests.training import toy_task

    data = _copy_with_corrupt(root, tmp_path, "unpaired_s2a/trainB", names={"anime_00001.png"})
    sources = _sources(data)
    it, _ = _iterator(sources)
    with deadline(30):
        expected = [int(np.sum(next(it)["skipped"])) for _ in range(6)]
    assert sum(expected) > 0
    ds, _ = pipeline.make_train_dataset(sources, image_size=SIZE, global_batch=2, seed=0, process_index=0,
                                       process_count=1)
    config = loop.LoopConfig(workdir=str(tmp_path / "run"), total_steps=6, global_batch=2, log_every=3,
                             images_every=0, checkpoint_every=100, tensorboard=False)
    with caplog.at_level(logging.WARNING), deadline(120):
        assert loop.train(toy_task.TASK, ds, config).finished
    reports = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["data/skipped_items"] for r in reports if "loss" in r] == [sum(expected[:3]), sum(expected[3:])]
    assert f"{sum(expected)} training items were skipped in this run (steps 1-6)" in caplog.text


def test_single_domain_stream_stops_naming_the_folder(tmp_path):
    folder = tmp_path / "anime"
    folder.mkdir()
    for i in range(5):
        (folder / f"broken_{i}.png").write_bytes(b"not a png")
    ds, _ = single_domain.make_dataset(single_domain.folder_source(str(folder)), image_size=SIZE, global_batch=2,
                                       seed=0, process_index=0, process_count=1, max_unreadable_in_a_row=7)
    with deadline(30), pytest.raises(pipeline.UnreadableDataError, match="8 items in a row") as raised:
        next(iter(ds))
    assert str(folder) in str(raised.value)


def test_a_negative_limit_is_refused(root):
    with pytest.raises(ValueError, match="max_unreadable_in_a_row"):
        _iterator(_sources(root), max_unreadable_in_a_row=-1)


def test_i2i_job_with_unreadable_photos_exits_1_with_one_line(root, tmp_path, caplog):
    """Through main.run_job: status 1 ("some inputs failed"), one error line naming the folder, no
    traceback, no hang, and no checkpoint written for the failure."""
    import jax

    from scenimefy_jax import main as entry
    from tests.training.test_i2i_job import tiny_config

    data = _copy_with_corrupt(root, tmp_path, "unpaired_s2a/trainA")
    config = tiny_config(tmp_path / "run", jax.config.jax_compilation_cache_dir or str(tmp_path / "xla_cache"))
    config.data.unpaired, config.data.paired = str(data / "unpaired_s2a"), str(data / "pair_s2a")
    config.data.max_unreadable_in_a_row = 5
    with caplog.at_level(logging.INFO), deadline(120):
        assert entry.run_job(config) == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert str(data / "unpaired_s2a" / "trainA") in errors[0].getMessage() and "6 items in a row" in errors[0].getMessage()
    assert "\n" not in errors[0].getMessage()
    checkpoints = tmp_path / "run" / "checkpoints"
    assert not os.path.isdir(checkpoints) or not [s for s in os.listdir(checkpoints) if s.isdigit()]
