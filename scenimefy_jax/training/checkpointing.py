"""Training checkpoints: the whole train state, the step, the PRNG key and the data iterator's state.

Built on Orbax's `CheckpointManager`:

* every `save_every` steps and at the end (`force=True`), keeping the last `keep` checkpoints;
* atomic: Orbax writes each step into a temporary directory and renames it only once complete, so a
  crash mid-save leaves the previous good checkpoint as the latest one;
* asynchronous (optional): arrays are copied to host memory before `save` returns and written in the
  background while training goes on;
* the data iterator state is captured at the moment `save` is called (not when the background write
  happens) and stored per host (grain's `process_<i>-of-<n>.json` files), because each host reads its
  own shard of the data; a checkpoint written by another number of hosts or decoding workers resumes
  at the same global stream position (`data/iterator_state.py`);
* `PreemptionGuard` turns SIGTERM (TPU VM preemption, `kill`, Slurm) into a flag the loop polls, so the
  job can save a final checkpoint and exit cleanly instead of dying mid-step.

Layout: `<workdir>/checkpoints/<step>/{state,data,meta}`.
"""
from __future__ import annotations

import json
import logging as py_logging
import os
import re
import signal
import threading
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from scenimefy_jax.data import iterator_state

_log = py_logging.getLogger(__name__)


class _IteratorSnapshot:
    """A frozen copy of an iterator state, in the shape grain's Orbax handler saves.

    grain's handler reads the state when the handler runs, which for an asynchronous save may be
    after training moved the iterator on; this snapshot pins it to the step being saved.
    """

    def __init__(self, state: Any):
        self._encoded = json.dumps(state, indent=1).encode()

    def get_state(self) -> bytes:
        return self._encoded


class Checkpointer:
    """Saves and restores `(train_state, data iterator, metadata)` under `directory`."""

    def __init__(self, directory: str | os.PathLike, *, save_every: int, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        self.async_save = async_save
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(1, int(save_every)),
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,  # leftovers of a save interrupted by a crash
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "meta"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        return self._manager.should_save(step)

    def reached_preemption(self, step: int) -> bool:
        """True on every host once any host saw a preemption notice (multi-host: JAX's sync manager)."""
        return self._manager.reached_preemption(step)

    def due(self, step: int) -> bool:
        """Whether `save(step, ...)` would write a checkpoint (the save interval, or a preemption)."""
        return bool(self._manager.should_save(step))

    def save(self, step: int, state: Any, data_iterator: Any, meta: dict, *, force: bool = False) -> bool:
        """Saves if `step` is on the interval (or `force`); returns whether a save was started."""
        if not force and not self._manager.should_save(step):
            return False
        snapshot = _IteratorSnapshot(data_iterator.get_state()) if data_iterator is not None else _IteratorSnapshot(None)
        saved = self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(snapshot),
                meta=ocp.args.JsonSave(dict(meta, step=int(step))),
            ),
            force=force,
        )
        if saved:
            _log.info("checkpoint of step %d %s to %s", step, "being written" if self.async_save else "written", self.directory)
        return saved

    def restore(self, step: int, state_template: Any, data_iterator: Any) -> tuple[Any, dict]:
        """Restores step `step` onto the shardings of `state_template`; sets the iterator's state in place.

        `state_template` is a pytree of arrays (or `jax.ShapeDtypeStruct`s with shardings) shaped like
        the saved state; restored arrays take its shardings, so the same checkpoint restores onto any mesh.
        """
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state_template)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                meta=ocp.args.JsonRestore(),
            ),
        )
        if data_iterator is not None:
            data_iterator.set_state(self._data_state(step, data_iterator.get_state()))
            if hasattr(data_iterator, "start_prefetch"):
                data_iterator.start_prefetch()
        return restored["state"], dict(restored["meta"])

    def _data_state(self, step: int, template: Any) -> Any:
        """This host's data-iterator state from checkpoint `step`: the saved one, or, when the checkpoint
        was written by another number of hosts or decoding workers, the same stream position in this
        run's shape (`data/iterator_state.py`); `StateMismatch` (naming the checkpoint) where it cannot
        be exact."""
        folder = epath.Path(self.directory) / str(step) / "data"
        saved = {}
        for path in folder.glob("process_*-of-*.json"):
            match = re.fullmatch(r"process_(\d+)-of-(\d+)\.json", path.name)
            if match:
                saved.setdefault(int(match[2]), {})[int(match[1])] = json.loads(path.read_text())
        index, count = jax.process_index(), jax.process_count()
        try:
            sets = list(saved.items())  # [(n, {i: state})]: one set, all of 0 .. n-1, unless damaged
            if len(sets) != 1 or sorted(sets[0][1]) != list(range(sets[0][0])):
                raise iterator_state.StateMismatch(f"expected one complete set of process_<i>-of-<n>.json, found "
                                                   f"{sorted(p.name for p in folder.glob('*.json'))}")
            (written_by, states), = sets
            # The same hosts, pipeline and worker count: the saved state as it is.
            if written_by == count and (jax.tree_util.tree_structure(states[index])
                                        == jax.tree_util.tree_structure(template)):
                return states[index]
            state = iterator_state.regroup([states[i] for i in range(written_by)], index, count, template)
        except iterator_state.StateMismatch as e:
            raise iterator_state.StateMismatch(f"cannot resume the data stream of checkpoint {folder.parent}: {e}") from None
        _log.info("data stream of checkpoint %d (written by %d process(es)) resumed on %d", step, written_by, count)
        return state

    def saved_meta(self, step: int) -> dict:
        """The JSON metadata saved with checkpoint `step`, without restoring its state."""
        return dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def wait(self) -> None:
        """Blocks until background writes are finished (call before exiting)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


class PreemptionGuard:
    """Context manager: while active, SIGTERM (and optionally SIGINT) only sets `requested`.

    The loop checks `requested` between steps, saves, and returns; a second signal of the same kind
    falls through to the previous handler (so an impatient Ctrl-C twice still stops the program).
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self.signals = signals
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def _handle(self, signum, frame):
        if self._event.is_set():
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
                return
            raise SystemExit(128 + signum)
        _log.warning("received signal %d: saving a checkpoint and stopping after the current step", signum)
        self._event.set()

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():  # signal handlers only install there
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
