"""Model export: an Orbax checkpoint directory holding `params` plus a small JSON `metadata` record.

This is the format the converter writes, the training jobs export, and `Translator` loads:

    <dir>/params/     Orbax StandardSave of the parameter pytree
    <dir>/metadata/   JSON: format, kind, architecture, source file and its SHA-256, version

Orbax writes into a temporary directory and renames it on success, so an interrupted export never
leaves a half-written model behind under the final name.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging as py_logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

FORMAT = "scenimefy_jax.model"
FORMAT_VERSION = 1


class _QuietOrbax(py_logging.Filter):
    """Drops Orbax's INFO chatter (dozens of lines per save/restore); its warnings and errors still show."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        return record.levelno >= py_logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def quiet_orbax_logs() -> None:
    """Installs (once) the filter that hides Orbax's INFO logs; used by model export and training."""
    logger = py_logging.getLogger("absl")
    if not any(isinstance(f, _QuietOrbax) for f in logger.filters):
        logger.addFilter(_QuietOrbax())


@dataclasses.dataclass(frozen=True)
class SavedModel:
    kind: str
    params: Any
    metadata: dict


def _package_version() -> str:
    from scenimefy_jax import __version__

    return __version__


def _checkpointer(**handlers) -> ocp.Checkpointer:
    """An Orbax checkpointer of the named item handlers that acts for this process alone.

    Model files hold host numpy arrays and are read or written by one process on its own (on several
    hosts: process 0 exports, any host loads); Orbax must not wait for the other processes."""
    index = jax.process_index()
    alone = ocp.options.MultiprocessingOptions(primary_host=index, active_processes={index})
    handler = ocp.CompositeCheckpointHandler(
        **{name: cls(multiprocessing_options=alone) for name, cls in handlers.items()},
        composite_options=ocp.CompositeOptions(multiprocessing_options=alone))
    return ocp.Checkpointer(handler, multiprocessing_options=alone)


def save_model(
    directory: str | os.PathLike,
    *,
    kind: str,
    params: Any,
    architecture: dict,
    source: dict | None = None,
    overwrite: bool = False,
) -> str:
    """Writes `params` and metadata to `directory` (absolute path returned)."""
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not overwrite:
        raise FileExistsError(f"{directory} already exists; choose another output or allow overwriting")
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "architecture": architecture,
        "source": source or {},
        "scenimefy_jax_version": _package_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    params = jax.tree_util.tree_map(np.asarray, params)
    quiet_orbax_logs()
    with _checkpointer(params=ocp.StandardCheckpointHandler, metadata=ocp.JsonCheckpointHandler) as checkpointer:
        checkpointer.save(
            directory,
            ocp.args.Composite(params=ocp.args.StandardSave(params), metadata=ocp.args.JsonSave(metadata)),
            force=overwrite,
        )
    return directory


def is_saved_model(directory: str | os.PathLike) -> bool:
    directory = os.fspath(directory)
    return os.path.isdir(os.path.join(directory, "params")) and os.path.isdir(os.path.join(directory, "metadata"))


def load_model(directory: str | os.PathLike, *, expected_kind: str | None = None) -> SavedModel:
    """Reads a directory written by `save_model`; parameters come back as host numpy arrays."""
    directory = os.path.abspath(os.fspath(directory))
    if not is_saved_model(directory):
        raise ValueError(
            f"{directory}: not a scenimefy_jax model directory (expected params/ and metadata/ "
            "written by tools/convert_checkpoint.py or a training export)"
        )
    quiet_orbax_logs()
    # Both items named, so reading one does not warn about the other.
    with _checkpointer(params=ocp.StandardCheckpointHandler, metadata=ocp.JsonCheckpointHandler) as checkpointer:
        metadata = checkpointer.restore(directory, ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"]
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            raise ValueError(f"{directory}: metadata does not describe a {FORMAT} export")
        if metadata.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{directory}: written by a newer scenimefy_jax (format {metadata['format_version']}); upgrade"
            )
        if expected_kind is not None and metadata.get("kind") != expected_kind:
            raise ValueError(f"{directory}: holds a {metadata.get('kind')!r} model, expected {expected_kind!r}")
        # Restore onto the host as numpy: callers place parameters on their own mesh.
        item_meta = checkpointer.metadata(directory)
        tree = item_meta["params"] if isinstance(item_meta, dict) else item_meta.item_metadata["params"]
        target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree)
        params = checkpointer.restore(
            directory,
            ocp.args.Composite(params=ocp.args.StandardRestore(target)),
        )["params"]
    params = jax.tree_util.tree_map(np.asarray, params)
    return SavedModel(kind=metadata["kind"], params=params, metadata=metadata)
