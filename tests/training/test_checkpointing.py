"""Checkpoints: exact round trip of state and iterator position, keep-last-k, interval, crash safety, SIGTERM,
a checkpoint written on 8 devices resumed on one."""
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scenimefy_jax.data import pipeline
from scenimefy_jax.parallel import mesh as mesh_lib
from scenimefy_jax.training import checkpointing, loop
from tests.training import test_loop, toy_task


class FakeIterator:
    """Stands in for a grain iterator: a position that get_state/set_state round-trip."""

    def __init__(self, position=0):
        self.position = position

    def get_state(self):
        return {"next_index": self.position}

    def set_state(self, state):
        self.position = state["next_index"]


def _state(seed):
    params = {"w": jax.random.normal(jax.random.key(seed), (3, 4)), "b": jnp.arange(4.0) * seed}
    opt = optax.adam(1e-3)
    return {"params": params, "opt": opt.init(params), "step": jnp.asarray(seed, jnp.int32),
            "rng": jax.random.key_data(jax.random.key(seed))}


def _equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.mark.parametrize("async_save", [False, True])
def test_round_trip_keep_and_interval(tmp_path, async_save):
    ckpt = checkpointing.Checkpointer(tmp_path, save_every=2, keep=2, async_save=async_save)
    for step in range(1, 8):
        ckpt.save(step, _state(step), FakeIterator(10 * step), {"note": "x"})
    ckpt.save(7, _state(7), FakeIterator(70), {}, force=True)  # the end of a run: always saved
    ckpt.wait()
    assert ckpt.all_steps() == [6, 7] and ckpt.latest_step() == 7  # interval 2, keep the last 2
    template = mesh_lib.replicate(_state(0), mesh_lib.make_mesh())
    it = FakeIterator()
    restored, meta = ckpt.restore(6, template, it)
    assert _equal(restored, _state(6)) and meta["step"] == 6 and meta["note"] == "x" and it.position == 60
    assert restored["params"]["w"].sharding.is_fully_replicated
    ckpt.close()


def test_iterator_state_is_taken_when_save_is_called(tmp_path):
    ckpt = checkpointing.Checkpointer(tmp_path, save_every=1, keep=1, async_save=True)
    it = FakeIterator(5)
    ckpt.save(1, _state(1), it, {})
    it.position = 99  # training moves on while the write happens in the background
    ckpt.wait()
    back = FakeIterator()
    ckpt.restore(1, _state(0), back)
    assert back.position == 5
    ckpt.close()


def test_interrupted_save_does_not_hide_the_last_good_checkpoint(tmp_path):
    ckpt = checkpointing.Checkpointer(tmp_path, save_every=1, keep=3, async_save=False)
    ckpt.save(3, _state(3), FakeIterator(3), {})
    ckpt.close()
    # What a crash during the write of step 4 leaves: Orbax's temporary directory, never renamed.
    partial = tmp_path / "4.orbax-checkpoint-tmp-1234"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "half_written").write_bytes(b"\0" * 10)
    reopened = checkpointing.Checkpointer(tmp_path, save_every=1, keep=3, async_save=False)
    assert reopened.latest_step() == 3
    restored, _ = reopened.restore(3, _state(0), FakeIterator())
    assert _equal(restored, _state(3))
    assert not partial.exists()  # cleaned up on start
    reopened.close()


def test_preemption_guard_turns_sigterm_into_a_flag():
    before = signal.getsignal(signal.SIGTERM)
    with checkpointing.PreemptionGuard() as guard:
        assert not guard.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested
    assert signal.getsignal(signal.SIGTERM) == before


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CROSS_MESH_BATCH = 8  # one item per device on the 8-device mesh


def _dataset_of_8(sources):
    return pipeline.make_train_dataset(sources, image_size=8, global_batch=CROSS_MESH_BATCH, seed=5,
                                       process_index=0, process_count=1)[0]


_EIGHT_DEVICE_SCRIPT = r"""
import sys

import jax
import numpy as np

from scenimefy_jax.data import pipeline
from scenimefy_jax.training import loop
from tests.training import test_checkpointing, test_loop, toy_task

workdir, demo_root, out = sys.argv[1:]
assert jax.device_count() == 8, jax.devices()
sources = pipeline.folder_sources(demo_root + "/unpaired_s2a", demo_root + "/pair_s2a")
seen = []
hooks = (lambda step, state, batch: seen.append(batch["position"]), lambda step, state, batch: step == 5)
result = loop.train(toy_task.TASK, test_checkpointing._dataset_of_8(sources),
                    test_loop._config(workdir, global_batch=8), hooks=hooks)
assert result.step == 5 and not result.finished
assert len(result.state.params["Conv_0"]["kernel"].sharding.device_set) == 8
leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(result.state)]
np.savez(out, positions=np.stack(seen), **{f"leaf{i}": x for i, x in enumerate(leaves)})
"""


@pytest.mark.slow  # an 8-device training run in a subprocess, ~11-22 s: in the slow pass, to keep the default suite under 15 minutes
def test_checkpoint_of_an_8_device_run_resumes_on_1_device(demo_root, demo_sources, tmp_path):
    """Steps 1-5 on 8 fake CPU devices (a subprocess), 6-8 here on one device, vs 8 steps on one device.

    The restore itself is exact: the checkpoint of step 5 comes back bit for bit on the 1-device mesh,
    and the data stream continues at the very next item. The final state is compared with a float32
    tolerance, not bit for bit: on 8 devices the batch-mean losses sum their per-device parts in another
    order than one device does, so steps 1-5 differ from the 1-device run by rounding (as in
    tests/parallel/test_mesh.py), and Adam carries that on through steps 6-8.
    """
    assert jax.device_count() == 1
    workdir, out = tmp_path / "run", tmp_path / "eight.npz"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", _EIGHT_DEVICE_SCRIPT, str(workdir), str(demo_root), str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    eight = np.load(out)
    config = test_loop._config(workdir, global_batch=CROSS_MESH_BATCH)
    # The checkpointed tree as the loop lays it out, placed on this process's 1-device mesh.
    one_device = mesh_lib.replicated(mesh_lib.make_mesh())
    template = {"train": jax.eval_shape(toy_task.TASK.init_state, jax.random.key(0)),
                "rng": jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))}
    template = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=one_device), template)
    ckpt = checkpointing.Checkpointer(workdir / "checkpoints", save_every=3, async_save=False)
    assert ckpt.latest_step() == 5
    restored, _ = ckpt.restore(5, template, None)
    ckpt.close()
    leaves = jax.tree_util.tree_leaves(restored["train"])
    assert len(leaves) == len(eight.files) - 1
    for i, leaf in enumerate(leaves):
        assert len(leaf.sharding.device_set) == 1
        np.testing.assert_array_equal(np.asarray(leaf), eight[f"leaf{i}"])

    seen, straight_seen = [], []
    resumed = loop.train(toy_task.TASK, _dataset_of_8(demo_sources), config,
                         hooks=(lambda step, state, batch: seen.append(batch["position"]),))
    assert resumed.resumed_from == 5 and resumed.finished and resumed.step == test_loop.TOTAL
    straight = loop.train(toy_task.TASK, _dataset_of_8(demo_sources),
                          test_loop._config(tmp_path / "straight", global_batch=CROSS_MESH_BATCH),
                          hooks=(lambda step, state, batch: straight_seen.append(batch["position"]),))
    np.testing.assert_array_equal(np.concatenate([eight["positions"], np.stack(seen)]), np.stack(straight_seen))
    assert int(resumed.state.count) == int(straight.state.count) == test_loop.TOTAL
    # Measured: at most 3e-8 absolute on parameters and 2.5e-5 relative on any element (Adam moments
    # included); a wrong restore (another step, a fresh init) moves parameters by ~1e-3 per step.
    for a, b in zip(jax.tree_util.tree_leaves(resumed.state), jax.tree_util.tree_leaves(straight.state)):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(np.max(np.abs(b))))
