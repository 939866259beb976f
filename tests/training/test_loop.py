"""The generic loop: resume is bit-exact (state, PRNG stream, data order), outputs land where documented."""
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from scenimefy_jax.data import pipeline
from scenimefy_jax.training import loop
from tests.training import toy_task

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOTAL = 8


def _dataset(sources):
    return pipeline.make_train_dataset(sources, image_size=8, global_batch=4, seed=5,
                                       process_index=0, process_count=1)[0]


def _config(workdir, **kw):
    base = dict(workdir=str(workdir), total_steps=TOTAL, global_batch=4, seed=11, log_every=2,
                images_every=4, checkpoint_every=3, tensorboard=True)
    base.update(kw)
    return loop.LoopConfig(**base)


def _recorder(into):
    return lambda step, state, batch: into.append((step, batch["position"].tolist()))


def _leaves(state):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]


def _assert_bit_equal(a, b):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def uninterrupted(demo_sources, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    seen = []
    result = loop.train(toy_task.TASK, _dataset(demo_sources), _config(workdir), hooks=(_recorder(seen),))
    return workdir, result, seen


def test_run_leaves_checkpoints_metrics_images_export(uninterrupted):
    workdir, result, seen = uninterrupted
    assert result.finished and result.step == TOTAL and result.resumed_from is None
    assert [s for s, _ in seen] == list(range(1, TOTAL + 1))
    # Global item positions: consecutive batches of 4, no gaps (the demo set has no broken file).
    assert sum((p for _, p in seen), []) == list(range(4 * TOTAL))
    ckpts = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
    assert ckpts == [3, 6, 8]  # every 3 steps, the end; keep 3
    lines = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
    steps = [l["step"] for l in lines if "step" in l and "loss" in l]
    assert steps == [2, 4, 6, 8]
    assert all(np.isfinite(l["loss"]) and l["images_per_sec"] > 0 for l in lines if "loss" in l)
    assert "schedule/lr_mult" in lines[-1] and lines[-1]["schedule/lr_mult"] == 0.5
    assert sorted(os.listdir(workdir / "images")) == ["grid_00000004.png", "grid_00000008.png"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tensorboard"))
    assert int(np.load(workdir / "exported.npy")) == TOTAL


def test_sigterm_then_resume_is_bit_exact(uninterrupted, demo_sources, tmp_path):
    _, straight, straight_seen = uninterrupted
    seen = []

    def preempt_at_5(step, state, batch):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # what a TPU VM preemption delivers

    handler_before = signal.getsignal(signal.SIGTERM)
    first = loop.train(toy_task.TASK, _dataset(demo_sources), _config(tmp_path),
                       hooks=(_recorder(seen), preempt_at_5))
    assert not first.finished and first.step == 5
    assert not os.path.exists(tmp_path / "exported.npy")
    # The loop's SIGTERM handler is uninstalled again: the one from before the loop is back.
    assert signal.getsignal(signal.SIGTERM) is handler_before
    second = loop.train(toy_task.TASK, _dataset(demo_sources), _config(tmp_path), hooks=(_recorder(seen),))
    assert second.resumed_from == 5 and second.finished
    assert seen == straight_seen  # same data order, step for step
    _assert_bit_equal(second.state, straight.state)


_KILL_SCRIPT = r"""
import os, sys
from scenimefy_jax.data import pipeline
from scenimefy_jax.training import loop
from tests.training import toy_task, test_loop

def main():
    sources = pipeline.folder_sources(sys.argv[2] + "/unpaired_s2a", sys.argv[2] + "/pair_s2a")
    def die(step, state, batch):
        if step == 5:
            os._exit(9)  # a hard crash: no handler, no final checkpoint, async writes abandoned
    loop.train(toy_task.TASK, test_loop._dataset(sources),
               test_loop._config(sys.argv[1], checkpoint_every=2, async_checkpoints=True), hooks=(die,))

if __name__ == "__main__":
    main()
"""


def test_hard_kill_then_resume_is_bit_exact(uninterrupted, demo_root, demo_sources, tmp_path):
    _, straight, straight_seen = uninterrupted
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path), str(demo_root)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr[-3000:]
    seen = []
    resumed = loop.train(toy_task.TASK, _dataset(demo_sources), _config(tmp_path, checkpoint_every=2),
                         hooks=(_recorder(seen),))
    assert resumed.resumed_from in (2, 4) and resumed.finished
    assert seen == straight_seen[resumed.resumed_from:]
    _assert_bit_equal(resumed.state, straight.state)


def test_frozen_arrays_reach_the_step_as_arguments(demo_sources, tmp_path):
    import dataclasses

    def step_with_frozen(state, batch, rng, inputs, frozen):
        state, metrics = toy_task.train_step(state, batch, rng, inputs)
        return state, dict(metrics, frozen_sum=jax.numpy.sum(frozen["w"]))

    task = dataclasses.replace(toy_task.TASK, train_step=step_with_frozen, frozen={"w": np.full((3,), 2.0, np.float32)},
                               make_images=None, export=None)
    result = loop.train(task, _dataset(demo_sources), _config(tmp_path, total_steps=2, tensorboard=False))
    assert result.finished
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert [l["frozen_sum"] for l in lines if "frozen_sum" in l] == [6.0]


def _diverging_step(where):
    """The toy step, but from its 5th step on the loss (or the parameters) turn NaN."""
    import jax.numpy as jnp

    def step(state, batch, rng, inputs):
        state, metrics = toy_task.train_step(state, batch, rng, inputs)
        bad = state.count >= 5
        if where == "loss":
            metrics = {"loss": jnp.where(bad, jnp.nan, metrics["loss"]), "finite_term": metrics["loss"]}
        else:
            state = state.replace(params=jax.tree_util.tree_map(lambda p: jnp.where(bad, jnp.nan, p), state.params))
        return state, metrics

    return step


@pytest.mark.parametrize("where, named", [("loss", "loss terms (loss)"), ("state", "parameters or optimiser state")])
def test_a_non_finite_step_stops_the_run_and_keeps_the_last_finite_checkpoint(demo_sources, tmp_path, caplog,
                                                                                where, named):
    import dataclasses
    import logging

    task = dataclasses.replace(toy_task.TASK, train_step=_diverging_step(where))
    with caplog.at_level(logging.ERROR):
        result = loop.train(task, _dataset(demo_sources), _config(tmp_path, checkpoint_every=3, log_every=2))
    assert result.diverged_at == 5 and not result.finished and result.step == 6  # found at the report of step 6
    ckpts = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
    assert max(ckpts) == 3  # step 6's checkpoint (due) and the final one were not written over it
    assert not (tmp_path / "exported.npy").exists()
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "step 5 produced a non-finite value in its " + named in message and "checkpoint (step 3) is kept" in message


def test_a_jobs_compilation_cache_setting_is_restored_afterwards(tmp_path):
    before = jax.config.jax_compilation_cache_dir
    with loop.compilation_cache(str(tmp_path / "cache")):
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
    assert jax.config.jax_compilation_cache_dir == before
    with loop.compilation_cache(None):  # off: untouched
        assert jax.config.jax_compilation_cache_dir == before
