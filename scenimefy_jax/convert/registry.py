"""One registry for every PyTorch -> JAX converter (translator, PatchGAN, heads, VGG, StyleGAN2, CLIP).

A converter declares a `kind`, a cheap `matches(checkpoint)` test used to detect the kind of an
unknown file, and `convert(checkpoint, source)` returning a `ConvertedModel`. Modules defining
converters call `register(...)` at import time; `scenimefy_jax.convert` imports them all.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from scenimefy_jax.convert.torch_checkpoint import CheckpointError


@dataclasses.dataclass(frozen=True)
class ConvertedModel:
    kind: str
    params: Any  # a pytree of float32 numpy arrays, in the layout the Flax module expects
    architecture: dict  # JSON-serialisable constructor arguments of the Flax module


@dataclasses.dataclass(frozen=True)
class Converter:
    kind: str
    description: str
    matches: Callable[[Any], bool]
    convert: Callable[[Any, str], ConvertedModel]


_REGISTRY: dict[str, Converter] = {}


def register(converter: Converter) -> Converter:
    if converter.kind in _REGISTRY:
        raise ValueError(f"converter kind {converter.kind!r} registered twice")
    _REGISTRY[converter.kind] = converter
    return converter


def kinds() -> list[str]:
    return sorted(_REGISTRY)


def get_converter(kind: str) -> Converter:
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown checkpoint kind {kind!r}; known kinds: {', '.join(kinds())}") from None


def _describe(checkpoint: Any) -> str:
    if isinstance(checkpoint, dict):
        keys = list(checkpoint)
        more = f", ... ({len(keys)} keys)" if len(keys) > 8 else ""
        return "keys " + ", ".join(map(str, keys[:8])) + more
    return f"a {type(checkpoint).__name__}"


def detect_kind(checkpoint: Any, source: str) -> str:
    """The one registered kind whose `matches` accepts `checkpoint`, or a `CheckpointError`."""
    found = [c.kind for c in _REGISTRY.values() if c.matches(checkpoint)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise CheckpointError(
            f"{source}: not a checkpoint of any known kind ({', '.join(kinds())}); it holds "
            f"{_describe(checkpoint)}. Pass --kind to see exactly which keys differ."
        )
    raise CheckpointError(f"{source}: ambiguous checkpoint, matches kinds {found}; pass --kind.")
