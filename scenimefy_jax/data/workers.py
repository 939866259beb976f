"""Data worker processes that exit when the training process dies.

grain's `mp_prefetch` starts its decoding workers as daemon processes, which are stopped when the
training process exits normally; after a `kill -9` (or an out-of-memory kill) nothing stops them, and
they keep their memory and CPU until someone kills them by hand. `parent_watch()` is the
`worker_init_fn` that prevents this:

    dataset.mp_prefetch(options, worker_init_fn=workers.parent_watch())

It records the pid of the process that builds the dataset (the one that will iterate it; grain's
workers are its direct children) and, in each worker:

* Linux: asks the kernel for a signal when the parent goes (`prctl(PR_SET_PDEATHSIG)`). Not SIGKILL:
  the kernel sends that signal when the *thread* that started the worker ends, and grain starts its
  workers from prefetch threads that it replaces on `set_state` (every resume from a checkpoint),
  which would kill healthy workers and hang the stream. A handler instead checks whether the worker
  was handed to another parent (`os.getppid()` changed), which happens only when the whole process died.
* elsewhere (no `prctl`): a daemon thread compares `os.getppid()` with the recorded pid every second.

Either way a worker whose parent died before the watch was set up exits at once.
"""
from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# The parent-death signal: one that neither grain, absl nor multiprocessing use in a worker.
PARENT_DIED_SIGNAL = getattr(signal, "SIGUSR2", None)
POLL_SECONDS = 1.0


def parent_watch(*, poll_only: bool = False) -> functools.partial:
    """`worker_init_fn` for grain `mp_prefetch`, bound to this process as the workers' parent.

    Picklable (a partial of a module-level function), as grain sends it to spawned workers.
    `poll_only` skips `prctl` (the portable fallback; for tests on Linux).
    """
    return functools.partial(exit_with_parent, os.getpid(), poll_only=poll_only)


def exit_with_parent(parent_pid: int, worker_index: int, worker_count: int, *, poll_only: bool = False) -> None:
    """Runs in a worker's main thread before it reads data: from now on, the worker exits with `parent_pid`."""
    del worker_count
    if poll_only or not _request_parent_death_signal(parent_pid):
        threading.Thread(target=_poll_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()
    _exit_if_orphaned(parent_pid)  # the parent may have died before the signal was requested


def _exit_if_orphaned(parent_pid: int) -> None:
    # A process whose parent dies is handed to init or a subreaper: its parent pid changes.
    if os.getppid() != parent_pid:
        sys.stderr.write(f"data worker {os.getpid()}: the training process {parent_pid} is gone; exiting\n")
        sys.stderr.flush()
        os._exit(1)  # no clean-up: nothing is waiting for this process's results any more


def _request_parent_death_signal(parent_pid: int) -> bool:
    """Linux: `PARENT_DIED_SIGNAL` whenever this process is re-parented. False where unavailable."""
    if not sys.platform.startswith("linux") or PARENT_DIED_SIGNAL is None:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        previous = signal.signal(PARENT_DIED_SIGNAL, lambda signum, frame: _exit_if_orphaned(parent_pid))
        if libc.prctl(_PR_SET_PDEATHSIG, int(PARENT_DIED_SIGNAL), 0, 0, 0) != 0:
            signal.signal(PARENT_DIED_SIGNAL, previous)
            return False
    except (OSError, AttributeError, ValueError):  # no libc symbol, or not the main thread
        return False
    return True


def _poll_parent(parent_pid: int) -> None:
    while True:
        time.sleep(POLL_SECONDS)
        _exit_if_orphaned(parent_pid)
