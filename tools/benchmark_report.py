"""What every benchmark in tools/ records beside its numbers: machine, package versions, date; and the
JSON writer, and the interleaved timer. One place, so the benchmark scripts describe and time their runs the
same way."""
from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import statistics
import time
from typing import Any, Callable


def machine_info() -> dict:
    import jax

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [d.device_kind for d in jax.devices()],
    }


def versions(*extra: str) -> dict:
    """Python, jax, jaxlib, flax, torch, numpy, and the `extra` packages (e.g. "transformers")."""
    out = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "torch", "numpy", *extra):
        out[name] = importlib.import_module(name).__version__
    return out


def write_report(path: str, report: dict[str, Any], *, packages: tuple[str, ...] = ()) -> str:
    """Writes `report` as JSON at `path` after the date, machine and versions (`packages` adds to those)."""
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(*packages),
        **report,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    return path


def interleaved_median_ms(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median ms per name of `repeats` rounds that call every function once, in order (warm them up first).

    Interleaving spreads background load and cache state alike over the contenders."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def parse_batch_sizes(values: list[str]) -> list[int]:
    """`--batch-sizes 1 8 16` or `--batch-sizes 1,8,16` -> [1, 8, 16] (SystemExit on anything else)."""
    try:
        sizes = [int(v) for item in values for v in item.split(",") if v]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise SystemExit(f"--batch-sizes: expected positive integers, got {values}")
    return sizes


def add_keep_memory_flag(parser) -> None:
    """`--no-keep-memory` for the tools that time the training step (see `keep_memory`)."""
    parser.add_argument("--no-keep-memory", action="store_true",
                        help="leave glibc's and JAX's memory defaults (see scenimefy_jax.kernels.cpu_memory)")


def keep_memory(args) -> dict:
    """As `python -m scenimefy_jax.main` does, before any device is touched, unless `--no-keep-memory`:
    the settings applied, for the report's JSON."""
    if args.no_keep_memory:
        return {"applied": False, "why": "--no-keep-memory"}
    from scenimefy_jax.kernels import cpu_memory

    return cpu_memory.keep_freed_memory()
