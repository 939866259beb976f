"""PyTorch checkpoint converters. `convert_file` detects the kind of a file and converts it.

Each converter module registers itself on import; add new ones to `_CONVERTER_MODULES`.
"""
from __future__ import annotations

import importlib
import os

from scenimefy_jax.convert.registry import ConvertedModel, Converter, detect_kind, get_converter, kinds
from scenimefy_jax.convert.torch_checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    file_sha256,
    load_torch_checkpoint,
)

_CONVERTER_MODULES = (
    "scenimefy_jax.convert.translator",
    "scenimefy_jax.convert.stylegan2",
    "scenimefy_jax.convert.clip",
    "scenimefy_jax.convert.patchgan",
    "scenimefy_jax.convert.projection",
    "scenimefy_jax.convert.vgg",
)

for _name in _CONVERTER_MODULES:
    importlib.import_module(_name)


def convert_file(path: str | os.PathLike, kind: str | None = None) -> ConvertedModel:
    """Reads a PyTorch checkpoint (weights only) and converts it; `kind=None` detects it."""
    source = os.fspath(path)
    checkpoint = load_torch_checkpoint(source)
    kind = kind or detect_kind(checkpoint, source)
    return get_converter(kind).convert(checkpoint, source)


__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "ConvertedModel",
    "Converter",
    "convert_file",
    "detect_kind",
    "file_sha256",
    "get_converter",
    "kinds",
    "load_torch_checkpoint",
]
