"""Checkpoints: exact round trip of state and iterator position, keep-last-k, interval, crash safety, SIGTERM."""
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scenimefy_jax.training import checkpointing, mesh as mesh_lib


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
