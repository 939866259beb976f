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
    "scenimefy_jax.convert.mask2former",
    "scenimefy_jax.convert.inception",
)

for _name in _CONVERTER_MODULES:
    importlib.import_module(_name)


def read_checkpoint(path: str | os.PathLike):
    """Loads any supported checkpoint form without running code: a PyTorch file (`weights_only`), a
    detectron2 `.pkl` (numpy-only unpickler), or a Hugging Face model folder (`config.json` + weights)."""
    from scenimefy_jax.convert import mask2former

    source = os.fspath(path)
    if os.path.isdir(source):
        return mask2former.load_hf_folder(source)
    if source.endswith(".pkl"):
        return mask2former.load_detectron2_pickle(source)
    return load_torch_checkpoint(source)


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint file, or of the weights file inside a Hugging Face folder."""
    from scenimefy_jax.convert import mask2former

    path = os.fspath(path)
    if os.path.isdir(path):
        return file_sha256(mask2former.load_hf_folder_weights_path(path))
    return file_sha256(path)


def convert_file(path: str | os.PathLike, kind: str | None = None) -> ConvertedModel:
    """Reads a checkpoint (see `read_checkpoint`) and converts it; `kind=None` detects it."""
    source = os.fspath(path)
    checkpoint = read_checkpoint(source)
    if kind is None:
        return get_converter(detect_kind(checkpoint, source)).convert(checkpoint, source)
    converter = get_converter(kind)
    try:
        return converter.convert(checkpoint, source)
    except CheckpointError:
        # A file of another known kind (a StyleGAN2 .pt given where a translator is needed) says what it is.
        others = [c for c in kinds() if c != kind and get_converter(c).matches(checkpoint)]
        if len(others) == 1:
            raise CheckpointError(
                f"{source}: this is a {others[0]!r} checkpoint ({get_converter(others[0]).description}); "
                f"a {kind!r} checkpoint is needed here") from None
        raise


__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "ConvertedModel",
    "checkpoint_sha256",
    "read_checkpoint",
    "Converter",
    "convert_file",
    "detect_kind",
    "file_sha256",
    "get_converter",
    "kinds",
    "load_torch_checkpoint",
]
