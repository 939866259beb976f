"""FID/KID during i2i training: logged every N steps, and equal to the evaluate job on the export."""
import json

import numpy as np
import pytest

from scenimefy_jax import main as entry
from scenimefy_jax.data import demo, images
from tests.evaluation.test_evaluate_job import base_config
from tests.training.test_i2i_job import tiny_config

# Its module fixture trains the tiny i2i job for 6 steps with FID: 87-90 s on 2 cores when it pays the
# step's compile (measured with --durations), so slow by the suite's rule; .ci/run runs the slow tests.
pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import jax

    workdir = tmp_path_factory.mktemp("i2i_eval")
    # The session's compilation cache: the step is the one tests/training/test_i2i_job.py compiles.
    before = jax.config.jax_compilation_cache_dir
    config = tiny_config(workdir, before or tmp_path_factory.mktemp("xla_cache"))
    config.n_epochs, config.n_epochs_decay = 1, 1  # 6 steps
    config.eval.update(every=3, inception="random", num_photos=4, batch_size=4, kid_subset_size=4)
    try:
        assert entry.run_job(config) == 0
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    with open(workdir / "metrics.jsonl") as f:
        lines = [json.loads(line) for line in f]
    return workdir, config, lines


def test_fid_and_kid_are_logged_every_n_steps_and_at_the_end(trained):
    _, _, lines = trained
    evals = {line["step"]: line for line in lines if "eval/fid" in line}
    assert sorted(evals) == [3, 6]
    for line in evals.values():
        assert np.isfinite(line["eval/fid"]) and line["eval/fid"] > 0
        assert np.isfinite(line["eval/kid_mean"]) and line["eval/kid_std"] >= 0 and line["eval/seconds"] > 0
    assert evals[3]["eval/fid"] != evals[6]["eval/fid"]  # the generator changed in between


def test_the_last_logged_fid_equals_the_evaluate_job_on_the_exported_translator(trained, tmp_path):
    workdir, config, lines = trained
    photos = tmp_path / "held_out"
    photos.mkdir()
    for i in range(4):  # the held-out demo photos: scenes 3,000,000 + i, at the training size
        photo, _ = demo.render_scene(config.seed, 3_000_000 + i, config.data.demo.size)
        images.save_png(photo, str(photos / f"p{i}.png"))
    job = base_config(inception="random", translator=str(workdir / "translator"), photos=str(photos),
                      real=str(workdir / "demo_data" / "unpaired_s2a" / "trainB"), output=str(tmp_path / "eval"),
                      batch_size=4, cache="")
    assert entry.run_job(job) == 0
    with open(tmp_path / "eval" / "results.json") as f:
        results = json.load(f)
    last = [line for line in lines if "eval/fid" in line][-1]
    assert results["fid"] == pytest.approx(last["eval/fid"], rel=1e-3)
    assert results["n_fake"] == 4 and results["n_real"] == config.data.demo.n_anime


def test_bad_eval_options_stop_the_job_with_status_2(tmp_path):
    config = tiny_config(tmp_path / "w", tmp_path / "cache")
    config.compilation_cache = ""  # leave the session's cache in place
    config.eval.update(every=3, inception="")
    assert entry.run_job(config) == 2
    config.eval.update(inception="random", protocol="tf")
    assert entry.run_job(config) == 2
