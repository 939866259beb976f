"""Flax parameter paths of the Mask2Former port <-> Hugging Face transformers 5.x state-dict keys.

The Flax modules under `scenimefy_jax.models.mask2former` are named after transformers 5.x's
`Mask2FormerForUniversalSegmentation` modules, so one rule maps every parameter (docs/reference.md §5.3):

* a path segment `name_<i>` (Flax's name for item i of a list attribute) is the torch segment
  `name.<i>`, except for names that are literally `..._<digit>` in torch (`adapter_1`, `layer_1`);
* a submodule named `"0"`, `"1"`, ... is the child of a torch `nn.Sequential`;
* the leaf `kernel` is torch's `weight`, transposed (`Linear` `(out, in)` -> `(in, out)`; `Conv2d`
  OIHW -> HWIO); `scale` (LayerNorm, GroupNorm) and `embedding` (`nn.Embedding`) are `weight` as is;
* any other leaf (`relative_position_bias_table`, the pixel decoder's `level_embed`,
  `nn.MultiheadAttention`'s `in_proj_weight` / `in_proj_bias`) has its torch name and layout.

`params_from_state_dict` applies the rule to a whole tree, strictly: every expected key present with
its shape, nothing else. The checkpoint formats (detectron2 `.pkl`, transformers 4.x names) are first
renamed to these 5.x keys by `scenimefy_jax.convert.mask2former`.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np

from scenimefy_jax.convert.torch_checkpoint import check_state_dict

_LITERAL_UNDERSCORE_NAMES = frozenset({"adapter_1", "layer_1"})
_LIST_ITEM = re.compile(r"^(.+)_(\d+)$")
_WEIGHT_LEAVES = {"kernel", "scale", "embedding"}


def flax_path_to_key(path: tuple[str, ...], prefix: str = "") -> str:
    """`("encoder", "layers_0", "fc1", "kernel")` -> `prefix + "encoder.layers.0.fc1.weight"`."""
    parts = []
    for part in path[:-1]:
        match = _LIST_ITEM.match(part)
        parts.append(f"{match[1]}.{match[2]}" if match and part not in _LITERAL_UNDERSCORE_NAMES else part)
    leaf = path[-1]
    parts.append("weight" if leaf in _WEIGHT_LEAVES else leaf)
    return prefix + ".".join(parts)


def torch_shape(leaf: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch shape of a Flax leaf (inverse of `to_flax`)."""
    if leaf == "kernel" and len(flax_shape) == 4:
        kh, kw, i, o = flax_shape
        return (o, i, kh, kw)
    if leaf == "kernel" and len(flax_shape) == 2:
        return tuple(flax_shape[::-1])
    return tuple(flax_shape)


def to_flax(leaf: str, value: np.ndarray) -> np.ndarray:
    value = np.asarray(value, dtype=np.float32)
    if leaf == "kernel" and value.ndim == 4:
        value = np.transpose(value, (2, 3, 1, 0))
    elif leaf == "kernel" and value.ndim == 2:
        value = value.T
    return np.ascontiguousarray(value)


def to_torch(leaf: str, value: np.ndarray) -> np.ndarray:
    value = np.asarray(value, dtype=np.float32)
    if leaf == "kernel" and value.ndim == 4:
        value = np.transpose(value, (3, 2, 0, 1))
    elif leaf == "kernel" and value.ndim == 2:
        value = value.T
    return np.ascontiguousarray(value)


def _leaf_paths(tree: Any) -> list[tuple[tuple[str, ...], Any]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(tuple(str(getattr(k, "key", k)) for k in path), leaf) for path, leaf in flat]


def expected_keys(shapes: Any, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """`{torch key: torch shape}` for a Flax params tree (arrays or `ShapeDtypeStruct`s)."""
    return {flax_path_to_key(p, prefix): torch_shape(p[-1], tuple(np.shape(x))) for p, x in _leaf_paths(shapes)}


def params_from_state_dict(
    state_dict: Mapping[str, np.ndarray],
    shapes: Any,
    *,
    prefix: str = "",
    source: str = "<state dict>",
    kind: str = "mask2former",
) -> dict:
    """Flax params shaped like `shapes` from 5.x-named torch arrays; raises listing every mismatch.

    `state_dict` must hold exactly the keys `expected_keys(shapes, prefix)`; callers drop the entries
    they deliberately ignore before calling.
    """
    check_state_dict(state_dict, expected_keys(shapes, prefix), source=source, kind=kind)
    params: dict = {}
    for path, _ in _leaf_paths(shapes):
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = to_flax(path[-1], state_dict[flax_path_to_key(path, prefix)])
    return params


def state_dict_from_params(params: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """The inverse of `params_from_state_dict` (used to write checkpoints in tests)."""
    return {flax_path_to_key(p, prefix): to_torch(p[-1], np.asarray(x)) for p, x in _leaf_paths(params)}
