"""Official `*_net_G.pth` (CUT ResnetGenerator state dict) -> `ResnetGenerator` params (docs/reference.md §1.5)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from scenimefy_jax.convert import registry
from scenimefy_jax.convert.torch_checkpoint import (
    CheckpointError,
    check_fixed_buffer,
    check_state_dict,
    conv_kernel,
)
from scenimefy_jax.models.layers import downsample_filter, upsample_filter

KIND = "translator"


def _conv_indices(n_blocks: int) -> dict[int, tuple[int, int]]:
    """Sequential index -> (out, in) channel multipliers of ngf for the plain convolutions."""
    up = 12 + n_blocks
    return {1: (1, 0), 4: (2, 1), 8: (4, 2), up + 1: (2, 4), up + 5: (1, 2), up + 9: (0, 1)}


def expected_shapes(ngf: int = 64, n_blocks: int = 9, nc: int = 3) -> dict[str, tuple[int, ...]]:
    """Every key of the official state dict with its shape (52 entries for the release)."""
    up = 12 + n_blocks
    kernel = {1: 7, 4: 3, 8: 3, up + 1: 3, up + 5: 3, up + 9: 7}
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (o, c) in _conv_indices(n_blocks).items():
        out_ch, in_ch = (o * ngf if o else nc), (c * ngf if c else nc)
        shapes[f"model.{i}.weight"] = (out_ch, in_ch, kernel[i], kernel[i])
        shapes[f"model.{i}.bias"] = (out_ch,)
    for i in range(12, 12 + n_blocks):
        for j in (1, 5):
            shapes[f"model.{i}.conv_block.{j}.weight"] = (4 * ngf, 4 * ngf, 3, 3)
            shapes[f"model.{i}.conv_block.{j}.bias"] = (4 * ngf,)
    shapes["model.7.filt"] = (2 * ngf, 1, 3, 3)
    shapes["model.11.filt"] = (4 * ngf, 1, 3, 3)
    shapes[f"model.{up}.filt"] = (4 * ngf, 1, 4, 4)
    shapes[f"model.{up + 4}.filt"] = (2 * ngf, 1, 4, 4)
    return shapes


def _state_dict(checkpoint: Any, source: str) -> Mapping[str, np.ndarray]:
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, np.ndarray) for v in checkpoint.values()):
        raise CheckpointError(f"{source}: expected a flat state dict of tensors for a {KIND!r} checkpoint")
    # DataParallel-wrapped saves carry a `module.` prefix; the official save strips it, others may not.
    if checkpoint and all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k[len("module.") :]: v for k, v in checkpoint.items()}
    return checkpoint


def convert_state_dict(
    checkpoint: Any, source: str = "<state dict>", *, ngf: int = 64, n_blocks: int = 9
) -> registry.ConvertedModel:
    sd = _state_dict(checkpoint, source)
    check_state_dict(sd, expected_shapes(ngf, n_blocks), source=source, kind=KIND)
    up = 12 + n_blocks
    for key, filt in {
        "model.7.filt": downsample_filter(2 * ngf),
        "model.11.filt": downsample_filter(4 * ngf),
        f"model.{up}.filt": upsample_filter(4 * ngf),
        f"model.{up + 4}.filt": upsample_filter(2 * ngf),
    }.items():
        check_fixed_buffer(sd[key], filt, key=key, source=source)

    def conv(prefix: str) -> dict[str, np.ndarray]:
        return {"kernel": conv_kernel(sd[f"{prefix}.weight"]), "bias": sd[f"{prefix}.bias"].astype(np.float32)}

    params: dict[str, Any] = {f"model_{i}": conv(f"model.{i}") for i in _conv_indices(n_blocks)}
    for i in range(12, 12 + n_blocks):
        params[f"model_{i}"] = {f"conv_block_{j}": conv(f"model.{i}.conv_block.{j}") for j in (1, 5)}
    return registry.ConvertedModel(
        kind=KIND,
        params=params,
        architecture={"model": "ResnetGenerator", "ngf": ngf, "n_blocks": n_blocks, "output_nc": 3},
    )


def _matches(checkpoint: Any) -> bool:
    return isinstance(checkpoint, Mapping) and any(
        str(k).endswith("model.12.conv_block.1.weight") for k in checkpoint
    )


registry.register(
    registry.Converter(
        kind=KIND,
        description="Scenimefy/CUT translator generator, official *_net_G.pth (resnet_9blocks)",
        matches=_matches,
        convert=convert_state_dict,
    )
)
