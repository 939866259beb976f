"""Data worker processes exit when the training process is killed (scenimefy_jax/data/workers.py).

Each test runs a small "training process" in a subprocess, learns its worker pids, SIGKILLs it and
watches /proc: every worker must be gone (or a zombie, i.e. already exited) within 10 s. Linux only
(/proc); the mechanism's fallback for other systems is exercised here through `poll_only`.
"""
import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GONE_WITHIN_S = 10.0

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")


def _stat(pid):
    """(state letter, parent pid, start time in clock ticks) of `pid`, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the command name may contain spaces
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _running(pid, started):
    """Still the same process (not a reused pid), and not exited (a zombie has: init reaps it)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in "ZX" and stat[2] == started


def _wait_for_line(proc, timeout):
    """The first stdout line of `proc`, parsed as JSON; fails if none comes within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if line:
                return json.loads(line)
        if proc.poll() is not None:
            break
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"no report from the subprocess within {timeout} s (exit {proc.returncode}):\n{err[-3000:]}")


def _kill_and_watch(script, *args, expected_workers):
    """Runs `script`, reads its worker pids, SIGKILLs it; returns the pids still running 10 s later."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers = {}
    try:
        report = _wait_for_line(proc, timeout=240)
        for pid in report["workers"]:
            stat = _stat(pid)
            assert stat is not None and stat[0] not in "ZX", f"worker {pid} is not running"
            # Direct children (no intermediate process): the parent pid workers.py records is theirs.
            assert stat[1] == proc.pid, (pid, stat)
            workers[pid] = stat[2]
        assert len(workers) == expected_workers, report
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + GONE_WITHIN_S
        while time.monotonic() < deadline and any(_running(p, s) for p, s in workers.items()):
            time.sleep(0.1)
        return [p for p, s in workers.items() if _running(p, s)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid, started in workers.items():  # never leave a worker behind, whatever the outcome
            if _running(pid, started):
                os.kill(pid, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()


_TRAINING_STREAM = r"""
import json, os, sys, time
from scenimefy_jax.data import demo, pipeline

root = sys.argv[1]
demo.write_demo_dataset(root, n_photos=6, n_anime=3, n_pairs=4, size=16, seed=0)
sources = pipeline.folder_sources(root + "/unpaired_s2a", root + "/pair_s2a")
dataset, _ = pipeline.make_train_dataset(sources, image_size=8, global_batch=2, seed=0, num_workers=2,
                                         process_index=0, process_count=1)
it = iter(dataset)
batches = [next(it), next(it)]
# A resume: grain replaces the threads that started the workers; the workers must live on.
it.set_state(it.get_state())
batches += [next(it), next(it)]
assert [int(b["position"][0]) for b in batches] == [0, 2, 4, 6], [b["position"] for b in batches]

def workers():
    found = []
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
            found += [int(p) for p in f.read().split()]
    with_cmdline = {p: open(f"/proc/{p}/cmdline").read() for p in found}
    return sorted(p for p, cmd in with_cmdline.items() if "spawn_main" in cmd)  # not the resource tracker

print(json.dumps({"workers": workers()}), flush=True)
time.sleep(600)
"""


def test_grain_workers_exit_when_the_training_process_is_killed(tmp_path):
    left = _kill_and_watch(_TRAINING_STREAM, str(tmp_path / "demo"), expected_workers=2)
    assert not left, f"data workers {left} outlived the killed training process"


_THREAD_STARTED_WORKER = r"""
import json, multiprocessing, sys, threading, time
from scenimefy_jax.data import workers
from tests.data import test_workers

poll_only = sys.argv[1] == "poll"
context = multiprocessing.get_context("spawn")
ready = context.Event()
started = []

def start():  # as grain does: a worker started from a thread that ends while the process lives on
    process = context.Process(target=test_workers.watched_sleeper, daemon=True,
                              args=(workers.parent_watch(poll_only=poll_only), ready))
    process.start()
    started.append(process)
    ready.wait(120)

thread = threading.Thread(target=start)
thread.start()
thread.join()
time.sleep(2 * workers.POLL_SECONDS)  # any signal from the thread's end has arrived by now
assert ready.is_set() and started[0].is_alive(), "the worker died with the thread that started it"
print(json.dumps({"workers": [started[0].pid]}), flush=True)
time.sleep(600)
"""


def watched_sleeper(init, ready):
    """Target of the spawned worker above: the watch as grain's worker would run it, then idle."""
    init(0, 1)
    ready.set()
    time.sleep(600)


@pytest.mark.parametrize("mechanism", ["prctl", "poll"])
def test_worker_outlives_its_starting_thread_but_not_its_process(mechanism):
    left = _kill_and_watch(_THREAD_STARTED_WORKER, mechanism, expected_workers=1)
    assert not left, f"worker {left} outlived the killed process"


def test_init_function_survives_pickling():
    import pickle

    from scenimefy_jax.data import workers

    init = pickle.loads(pickle.dumps(workers.parent_watch()))
    assert init.func is workers.exit_with_parent and init.args == (os.getpid(),)
