"""The settings that define a training run's computation, as a flat dict stored with its checkpoints.

Before it resumes, the loop compares the fingerprint saved in the latest checkpoint with the current
one (`loop.LoopConfig.fingerprint`), so that a changed learning rate, batch, data set or model variant
does not silently continue a state trained under other settings (docs/training.md, "Resuming: what is
checked"). Settings that never change what the steps compute are left out, so that the legitimate
resumes (a longer run, other logging, other hosts) still go through.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

# Dotted keys left out of every job's fingerprint; a key also covers everything below it ("eval": eval.*).
IGNORED = (
    # Where the run lives, and where it stops: extending a run (a larger num_steps) is a legitimate resume;
    # the schedules depend on the epoch counts (n_epochs, n_epochs_decay), which stay in the fingerprint.
    "workdir", "num_steps",
    # What is watched, and when: reports, image grids and FID/KID read the state, they never change it.
    "log_every", "images_every", "grid_images", "eval",
    # When and how checkpoints are written: a resumed run is bit-exact whatever the cadence (tests/training).
    "checkpoint_every", "keep_checkpoints", "async_checkpoints",
    # Where outputs and compiled programs go, and which photo the final model translates as a sample.
    "tensorboard", "compilation_cache", "sample_image",
    # Decoding processes: the stream is the same for any number of workers (data/pipeline.py).
    "data.num_workers",
    # When to give up on unreadable files: it can stop the stream, it never changes the items.
    "data.max_unreadable_in_a_row",
    # Hosts and processes: the state restores onto any mesh, and the hosts' batches together are the
    # same global batch whatever their number (global_batch, which fixes the stream, stays).
    "distributed",
    # The switch that lets a changed fingerprint through.
    "allow_config_change",
)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"model": {"lr": 1}}` -> `{"model.lr": 1}` (nested mappings only; lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _ignored(key: str, ignore: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in ignore)


def config_fingerprint(config: Any, ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The flat `{dotted.key: value}` of `config` (an ml_collections `ConfigDict` or a nested mapping),
    without `IGNORED` and `ignore`; values as JSON gives them back (tuples become lists), so that a
    fingerprint compares equal to itself after a round trip through a checkpoint."""
    tree = config.to_dict() if hasattr(config, "to_dict") else config
    ignore = tuple(IGNORED) + tuple(ignore)
    flat = {k: v for k, v in flatten(tree).items() if not _ignored(k, ignore)}
    return json.loads(json.dumps(flat, sort_keys=True, default=repr))


_ABSENT = object()


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`key: old -> new` for each key whose value changed, appeared or disappeared, in key order."""
    def show(value):
        return json.dumps(value) if value is not _ABSENT else "(absent)"

    return [f"{k}: {show(old.get(k, _ABSENT))} -> {show(new.get(k, _ABSENT))}"
            for k in sorted(set(old) | set(new)) if old.get(k, _ABSENT) != new.get(k, _ABSENT)]

