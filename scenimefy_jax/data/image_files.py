"""Input files for the jobs that run a network over a user's photos (translate, segment, evaluate).

`check_common_options` validates the options they share; `find_inputs` expands `--config.input` (a file, a folder or a glob) to image paths; `prefetch_images`
decodes them in a thread pool a bounded number ahead of the network, setting unreadable files aside
by name so that one corrupt photo does not stop a run; `stem_clashes` finds inputs that would write
the same output name.
"""
from __future__ import annotations

import collections
import concurrent.futures
import glob
import os
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from scenimefy_jax.data import images as image_ops

_GLOB_CHARS = set("*?[")


class ConfigError(ValueError):
    """A bad config value; the message names the `--config.<option>`."""


def check_common_options(config, *, checkpoint_help: str, output_help: str) -> None:
    """The options every photo job shares: checkpoint, input, output, dtype, batch_size, max_side."""
    if not config.checkpoint:
        raise ConfigError(f"--config.checkpoint is required: {checkpoint_help}")
    if not os.path.exists(config.checkpoint):
        raise ConfigError(f"--config.checkpoint={config.checkpoint!r}: no such file or directory")
    if not config.input:
        raise ConfigError("--config.input is required: an image file, a folder or a glob such as 'photos/*.jpg'")
    if not config.output:
        raise ConfigError(f"--config.output is required: {output_help}")
    if config.dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"--config.dtype must be 'float32' or 'bfloat16', got {config.dtype!r}")
    if config.batch_size < 1:
        raise ConfigError(f"--config.batch_size must be >= 1, got {config.batch_size}")
    if config.max_side < 0:
        raise ConfigError(f"--config.max_side must be >= 0 (0: off), got {config.max_side}")


def find_inputs(spec: str) -> tuple[list[str], list[str]]:
    """Expands a file, a folder (its image files, not recursive) or a glob; returns (inputs, ignored)."""
    if os.path.isdir(spec):
        names = sorted(n for n in os.listdir(spec) if not n.startswith("."))
        paths = [os.path.join(spec, n) for n in names if os.path.isfile(os.path.join(spec, n))]
        images = [p for p in paths if image_ops.is_image_file(p)]
        return images, [p for p in paths if p not in images]
    if os.path.isfile(spec):
        return [spec], []
    if _GLOB_CHARS & set(spec):
        return sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)), []
    raise ConfigError(f"--config.input={spec!r}: no such file, folder or glob match")


def stem_clashes(paths: Iterable[str]) -> dict[str, list[str]]:
    """`{stem: paths}` for file stems shared by several paths (`a.jpg` and `a.png` both -> `a`)."""
    stems = collections.defaultdict(list)
    for path in paths:
        stems[os.path.splitext(os.path.basename(path))[0]].append(path)
    return {s: p for s, p in stems.items() if len(p) > 1}


def prefetch_images(
    paths: Sequence[str], alpha_background: Sequence[int] | None, workers: int, failures: dict[str, str],
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yields `(path, [H, W, 3] uint8)` in input order, decoded by `workers` threads up to 4 per thread ahead.

    A file that `images.load_image` cannot read is not yielded: `failures[path]` gets its message.
    `transform`, if given, runs on each decoded image in the same worker thread (e.g. the resize of an
    evaluation protocol), and its result is yielded instead.
    """
    workers = max(1, workers)

    def load(path):
        image = image_ops.load_image(path, alpha_background=alpha_background)
        return image if transform is None else transform(image)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending: collections.deque = collections.deque()
        it = iter(paths)
        for path in it:
            pending.append((path, pool.submit(load, path)))
            if len(pending) >= 4 * workers:
                break
        while pending:
            path, future = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(load, nxt)))
            try:
                yield path, future.result()
            except image_ops.ImageReadError as e:
                failures[path] = str(e)


def _log_failures(failures: dict[str, str]) -> None:
    from absl import logging

    for path, reason in failures.items():
        logging.error("skipped %s", reason if reason.startswith(path) else f"{path}: {reason}")


def finish_all_processes(verb: str, written: int, output: str, elapsed: float, kept: int,
                         failures: dict[str, str]) -> int:
    """`finish_run` over the shares of every process (several hosts): each process logs its own skipped
    files; process 0 logs the totals; all return the same exit status."""
    import jax

    if jax.process_count() == 1:
        return finish_run(verb, written, output, elapsed, kept, failures)
    from absl import logging

    from scenimefy_jax.parallel import distributed

    _log_failures(failures)
    logging.info("process %d: %s %d image(s) of its share, %d failed", jax.process_index(), verb, written,
                 len(failures))
    shares = distributed.gather_json({"written": written, "failed": len(failures)})
    total_written, total_failed = sum(s["written"] for s in shares), sum(s["failed"] for s in shares)
    if distributed.is_writer():
        logging.info("%s %d image(s) into %s in %.1f s on %d processes; %d kept, %d failed", verb, total_written,
                     output, elapsed, len(shares), kept, total_failed)
    return 1 if total_failed else 0


def finish_run(verb: str, written: int, output: str, elapsed: float, kept: int, failures: dict[str, str]) -> int:
    """Logs each skipped file by name and the run's summary; returns the exit status (1 if any failed)."""
    from absl import logging

    _log_failures(failures)
    logging.info("%s %d image(s) into %s in %.1f s; %d kept, %d failed", verb, written, output, elapsed, kept,
                 len(failures))
    return 1 if failures else 0
