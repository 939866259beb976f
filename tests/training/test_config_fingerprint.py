"""Resuming checks the settings: a checkpoint trained with other settings is refused (naming each change)
before any step runs, unless allow_config_change; settings that never change the steps pass."""
import importlib.util
import json
import logging
import os

import jax
import ml_collections
import pytest

from scenimefy_jax import main as entry
from scenimefy_jax.data.image_files import ConfigError
from scenimefy_jax.training import fingerprint, loop
from tests.training import toy_task
from tests.training.test_loop import _config, _dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTINGS = {"model.lr": 0.01, "global_batch": 4, "data.flip": True}


def _train(sources, workdir, settings, total, seen=None, **kw):
    hooks = (lambda step, state, batch: seen.append(step),) if seen is not None else ()
    config = _config(workdir, total_steps=total, fingerprint=settings, tensorboard=False, images_every=0, **kw)
    return loop.train(toy_task.TASK, _dataset(sources), config, hooks=hooks)


def _steps(workdir):
    return sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())


def test_changed_settings_are_refused_before_any_step(demo_sources, tmp_path):
    _train(demo_sources, tmp_path, SETTINGS, total=2)
    before = _steps(tmp_path)
    changed = {"model.lr": 0.02, "global_batch": 4, "model.ngf": 8}  # lr changed, data.flip gone, ngf new
    seen = []
    with pytest.raises(ConfigError) as refused:
        _train(demo_sources, tmp_path, changed, total=4, seen=seen)
    message = str(refused.value)
    assert "\n" not in message
    for change in ("model.lr: 0.01 -> 0.02", "data.flip: true -> (absent)", "model.ngf: (absent) -> 8"):
        assert change in message
    assert "global_batch" not in message  # unchanged keys are not listed
    assert "new workdir" in message and "--config.allow_config_change=True" in message
    assert seen == [] and _steps(tmp_path) == before and before[-1] == 2
    # The refused attempt left the workdir as it was: the unchanged settings resume it.
    resumed = _train(demo_sources, tmp_path, SETTINGS, total=4)
    assert resumed.resumed_from == 2 and resumed.finished


def test_allow_config_change_resumes_and_stores_the_new_settings(demo_sources, tmp_path, caplog):
    _train(demo_sources, tmp_path, SETTINGS, total=2)
    changed = dict(SETTINGS, **{"model.lr": 0.02})
    with caplog.at_level(logging.WARNING):
        result = _train(demo_sources, tmp_path, changed, total=4, allow_config_change=True)
    assert result.resumed_from == 2 and result.finished
    assert "model.lr: 0.01 -> 0.02" in caplog.text
    # Later checkpoints hold the new settings: they resume without the switch, the old ones do not.
    assert _train(demo_sources, tmp_path, changed, total=6).resumed_from == 4
    with pytest.raises(ConfigError, match=r"model.lr: 0.02 -> 0.01"):
        _train(demo_sources, tmp_path, SETTINGS, total=8)


def test_settings_that_do_not_change_the_steps_resume(demo_sources, tmp_path):
    config = ml_collections.ConfigDict({
        "workdir": str(tmp_path), "num_steps": 2, "log_every": 2, "checkpoint_every": 3, "seed": 0,
        "model": {"lr": 0.01}, "data": {"num_workers": 0, "flip": True}, "eval": {"every": 0},
        "distributed": {"num_processes": 1}, "allow_config_change": False})
    _train(demo_sources, tmp_path, fingerprint.config_fingerprint(config), total=config.num_steps)
    config.num_steps, config.log_every, config.checkpoint_every = 4, 1, 2  # a longer run, other cadences
    config.data.num_workers, config.eval.every, config.distributed.num_processes = 2, 5, 4
    seen = []
    result = _train(demo_sources, tmp_path, fingerprint.config_fingerprint(config), total=config.num_steps,
                    seen=seen, log_every=config.log_every, checkpoint_every=config.checkpoint_every)
    assert result.resumed_from == 2 and result.finished and seen == [3, 4]


def test_a_checkpoint_without_fingerprint_resumes_with_a_warning(demo_sources, tmp_path, caplog):
    _train(demo_sources, tmp_path, None, total=2)  # as written before fingerprints were stored
    with caplog.at_level(logging.WARNING):
        result = _train(demo_sources, tmp_path, SETTINGS, total=4)
    assert result.resumed_from == 2 and result.finished
    assert "no config fingerprint" in caplog.text
    with pytest.raises(ConfigError, match="model.lr"):  # and from then on the settings are checked
        _train(demo_sources, tmp_path, dict(SETTINGS, **{"model.lr": 0.5}), total=6)


def _job_config(name, variant=""):
    spec = importlib.util.spec_from_file_location(f"{name}_config", os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def _job_fingerprint(name, **overrides):
    """The fingerprint the job hands the loop for its default config with `overrides` ({"a.b": value})."""
    from scenimefy_jax.training import stylegan_finetune

    config = _job_config(name)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    if name == "stylegan_finetune":
        return stylegan_finetune._loop_config(config, config.workdir, config.num_steps).fingerprint
    return fingerprint.config_fingerprint(config)  # as i2i._run builds it


UNCHANGED_STEPS = {  # settings that never change what the steps compute (fingerprint.IGNORED and the jobs')
    "i2i": {"eval.every": 10, "sample_image": "x.png", "compilation_cache": ""},
    "stylegan_finetune": {"grid_seed": 3, "conv_impl": "vmap", "compilation_cache": False,
                          "compilation_cache_dir": "c"},
}


@pytest.mark.parametrize("name", ["i2i", "stylegan_finetune"])
def test_job_fingerprints_leave_out_cadences_outputs_workers_and_hosts(name):
    reference = _job_fingerprint(name)
    unchanged = {"workdir": "elsewhere", "num_steps": 7, "log_every": 1, "images_every": 3, "grid_images": 1,
                 "checkpoint_every": 9, "keep_checkpoints": 1, "async_checkpoints": False, "tensorboard": False,
                 "data.num_workers": 5, "data.max_unreadable_in_a_row": 3, "allow_config_change": True,
                 **UNCHANGED_STEPS[name]}
    for key, value in unchanged.items():
        assert _job_fingerprint(name, **{key: value}) == reference, key
    assert not [k for k in reference if k.startswith(("distributed.", "eval."))]
    changed = {"model.lr": 0.5, "global_batch": 2, "seed": 1, "data.flip": False, "data.image_size": 32,
               "model.faithful_to": "paper", "data.demo.n_anime": 3}
    for key, value in changed.items():
        assert fingerprint.differences(reference, _job_fingerprint(name, **{key: value})) == [
            f"{key}: {json.dumps(reference[key])} -> {json.dumps(value)}"]


@pytest.mark.slow  # two i2i job runs, ~12-25 s: in the slow pass, to keep the default suite under 15 minutes
def test_i2i_job_refuses_a_changed_learning_rate(tmp_path, caplog, monkeypatch):
    """Through main.run_job: a changed model.lr is one logged line naming it, exit status 2."""
    from scenimefy_jax.training import checkpointing
    from tests.training.test_i2i_job import tiny_config

    cache = jax.config.jax_compilation_cache_dir or str(tmp_path / "xla_cache")  # the session's (conftest)
    # The first run stops as on a SIGTERM before its first step: it saves the checkpoint of step 0
    # (with the fingerprint) without compiling the train step, which keeps this test to seconds.
    with monkeypatch.context() as patch:
        patch.setattr(checkpointing.PreemptionGuard, "requested", property(lambda self: True))
        assert entry.run_job(tiny_config(tmp_path / "run", cache)) == 0
    assert sorted(int(s) for s in os.listdir(tmp_path / "run" / "checkpoints") if s.isdigit()) == [0]
    config = tiny_config(tmp_path / "run", cache)
    config.model.lr = 1e-3
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert entry.run_job(config) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "model.lr: 0.0002 -> 0.001" in errors[0], errors
    assert "resumed from" not in caplog.text
    assert sorted(int(s) for s in os.listdir(tmp_path / "run" / "checkpoints") if s.isdigit()) == [0]
