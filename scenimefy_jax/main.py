"""The one entry point: `python -m scenimefy_jax.main --config=configs/<job>.py [--config.key=value ...]`.

Each config's `get_config()` sets `config.job`; that name selects a module here whose
`run(config) -> int` does the work and returns the process exit status. Jobs are imported lazily so
that, say, translating photos never imports the training stack.
"""
from __future__ import annotations

import importlib
import logging as py_logging
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

USAGE_ERROR = 2  # exit status for a bad command line or config value (0: done, 1: some inputs failed)

JOBS = {
    "translate": "scenimefy_jax.inference.cli",
    "translate_video": "scenimefy_jax.video.translate_video",
    "segment": "scenimefy_jax.segmentation.cli",
    "evaluate": "scenimefy_jax.evaluation.job",
    "pseudo_pairs": "scenimefy_jax.pseudo_pairs.job",
    "i2i": "scenimefy_jax.training.i2i",
    "sample": "scenimefy_jax.sampling",
    "stylegan_finetune": "scenimefy_jax.training.stylegan_finetune",
    "app": "scenimefy_jax.app.server",
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/<job>.py file.", lock_config=True)


def run_job(config) -> int:
    """Runs the config's job; returns its exit status: 0 done, 1 some inputs failed, 2 a bad config value
    (a job's `ConfigError`, logged as one line naming the option)."""
    from scenimefy_jax.data.image_files import ConfigError

    job = config.get("job")
    if job not in JOBS:
        raise app.UsageError(f"config.job={job!r} is not a known job; known jobs: {', '.join(sorted(JOBS))}")
    from scenimefy_jax.parallel import distributed

    try:
        # Several hosts: join the others before the job creates a backend (docs/multihost.md).
        distributed.initialize_from_config(config.get("distributed"))
    except distributed.DistributedConfigError as e:
        logging.error("%s", e)
        return USAGE_ERROR
    try:
        return int(importlib.import_module(JOBS[job]).run(config) or 0)
    except ConfigError as e:
        logging.error("%s", e)
        return USAGE_ERROR


def _usage_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(USAGE_ERROR)


def _unknown_option_message(error: Exception, argv: list[str]) -> str:
    """One line for an override naming no option, with ml_collections' suggestion if it made one."""
    text = str(error).encode().decode("unicode_escape")
    suggestion = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
    bad = suggestion.group(2) if suggestion else (re.findall(r"'([^'\\]+)'", text) or ["?"])[0]
    flag = next((a.split("=", 1)[0] for a in argv if a.startswith("--config.")
                 and re.search(rf"(^|\.){re.escape(bad)}$", a.split("=", 1)[0][len("--config."):])), f"--config.{bad}")
    config = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "the config")
    hint = ""
    if suggestion:
        hint = f"; did you mean {flag[: len(flag) - len(bad)]}{suggestion.group(1)}?"
    return f"{flag} is not an option of {config}{hint}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, but a misspelt or malformed `--config.<option>` is one line and exit status 2
    instead of a traceback (ml_collections raises AttributeError for an unknown field)."""
    for arg in argv[1:]:
        if arg.startswith("--config=") and not os.path.isfile(arg[len("--config="):].split(":", 1)[0]):
            _usage_error(f"{arg}: no such config file (the job configs are configs/<job>.py)")
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        if any(line.startswith("Traceback") for line in lines):  # a config file that raised: its own message
            lines = [lines[0].rstrip(":") + ":", lines[-1]]
        _usage_error(" ".join(lines))
    except AttributeError as e:
        _usage_error(_unknown_option_message(e, argv))
    except (KeyError, ValueError, TypeError) as e:  # a config file's get_config() refusing a variant, ...
        _usage_error(f"{type(e).__name__}: {e}")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _CONFIG.value is None:
        raise app.UsageError("--config=configs/<job>.py is required")
    logging.set_verbosity(logging.INFO)
    # JAX probes every backend it knows at start and logs the absent ones (e.g. "Unable to initialize
    # backend 'tpu'") at INFO, which reads like an error on a CPU or GPU machine.
    py_logging.getLogger("jax._src.xla_bridge").setLevel(py_logging.WARNING)
    # Before any device is touched: reuse each execution's temporaries instead of mapping them afresh
    # every step (scenimefy_jax/kernels/cpu_memory.py). Here, not in run_job: it is a process setting.
    from scenimefy_jax.kernels import cpu_memory

    logging.info("CPU memory: %s", cpu_memory.keep_freed_memory())
    sys.exit(run_job(_CONFIG.value))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=parse_flags)
