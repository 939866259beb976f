"""Official `*_net_F.pth` and `*_net_F_s.pth` (PatchSampleF MLP heads) -> `PatchProjector` params.

F and F_s have the same architecture and key set (docs/reference.md §2.3), so they are one kind,
`projection_head`. Channel counts are read from the file (3, 128, 256, 256, 256 and nc = 256 for the
official run) and must form the five-tap layout `(3, 2*ngf, 4*ngf, 4*ngf, 4*ngf)`; every key and
shape is then checked strictly.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from scenimefy_jax.convert import registry
from scenimefy_jax.convert.torch_checkpoint import CheckpointError, check_state_dict, dense_kernel

KIND = "projection_head"
N_HEADS = 5


def expected_shapes(channels=(3, 128, 256, 256, 256), nc: int = 256) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for k, c in enumerate(channels):
        shapes[f"mlp_{k}.0.weight"] = (nc, c)
        shapes[f"mlp_{k}.0.bias"] = (nc,)
        shapes[f"mlp_{k}.2.weight"] = (nc, nc)
        shapes[f"mlp_{k}.2.bias"] = (nc,)
    return shapes


def convert_state_dict(checkpoint: Any, source: str = "<state dict>") -> registry.ConvertedModel:
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, np.ndarray) for v in checkpoint.values()):
        raise CheckpointError(f"{source}: expected a flat state dict of tensors for a {KIND!r} checkpoint")
    sd = dict(checkpoint)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    w1 = sd.get("mlp_1.0.weight")
    if w1 is None or w1.ndim != 2:
        check_state_dict(sd, expected_shapes(), source=source, kind=KIND)  # raises, naming every key
    ngf = int(w1.shape[1]) // 2
    nc = int(w1.shape[0])
    channels = (3, 2 * ngf, 4 * ngf, 4 * ngf, 4 * ngf)
    check_state_dict(sd, expected_shapes(channels, nc), source=source, kind=KIND)
    params = {}
    for k in range(N_HEADS):
        for j in (0, 2):
            params[f"mlp_{k}_{j}"] = {
                "kernel": dense_kernel(sd[f"mlp_{k}.{j}.weight"]),
                "bias": sd[f"mlp_{k}.{j}.bias"].astype(np.float32),
            }
    return registry.ConvertedModel(
        kind=KIND, params=params, architecture={"model": "PatchProjector", "channels": list(channels), "nc": nc}
    )


def _matches(checkpoint: Any) -> bool:
    return isinstance(checkpoint, Mapping) and any(str(k).endswith("mlp_0.0.weight") for k in checkpoint)


registry.register(
    registry.Converter(
        kind=KIND,
        description="Scenimefy/CUT patch projection head F or F_s, official *_net_F.pth / *_net_F_s.pth",
        matches=_matches,
        convert=convert_state_dict,
    )
)
