"""The one entry point: `python -m scenimefy_jax.main --config=configs/<job>.py [--config.key=value ...]`.

Each config's `get_config()` sets `config.job`; that name selects a module here whose
`run(config) -> int` does the work and returns the process exit status. Jobs are imported lazily so
that, say, translating photos never imports the training stack.
"""
from __future__ import annotations

import importlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

JOBS = {
    "translate": "scenimefy_jax.inference.cli",
    "segment": "scenimefy_jax.segmentation.cli",
    "evaluate": "scenimefy_jax.evaluation.job",
    "pseudo_pairs": "scenimefy_jax.pseudo_pairs.job",
    "i2i": "scenimefy_jax.training.i2i",
    "sample": "scenimefy_jax.sampling",
    "stylegan_finetune": "scenimefy_jax.training.stylegan_finetune",
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/<job>.py file.", lock_config=True)


def run_job(config) -> int:
    job = config.get("job")
    if job not in JOBS:
        raise app.UsageError(f"config.job={job!r} is not a known job; known jobs: {', '.join(sorted(JOBS))}")
    return int(importlib.import_module(JOBS[job]).run(config) or 0)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _CONFIG.value is None:
        raise app.UsageError("--config=configs/<job>.py is required")
    logging.set_verbosity(logging.INFO)
    sys.exit(run_job(_CONFIG.value))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
