"""pytorch-fid's FID Inception weights -> `FIDInceptionV3` params (docs/reference.md §6.1).

The file is `pt_inception-2015-12-05-6726825d.pth`, pytorch-fid's release of the TF
`inception-2015-12-05` graph:

    https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

torch-fidelity ships the same weights (same hash) as `weights-inception-2015-12-05-6726825d.pth`.
It is a flat state dict: 94 `BasicConv2d` layers, each `<block>[.branch].conv.weight` plus
`.bn.{weight, bias, running_mean, running_var}`, and `fc.weight [1008, 2048]`, `fc.bias [1008]`.
`.bn.num_batches_tracked` (present or not, depending on the torch that saved the file) is a training
counter with no effect in eval mode: accepted and dropped, but only beside a BatchNorm that exists.
Every other key must be exactly the expected set with the expected shapes.

    python tools/convert_checkpoint.py pt_inception-2015-12-05-6726825d.pth models/fid_inception
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from scenimefy_jax.convert import registry
from scenimefy_jax.convert.torch_checkpoint import CheckpointError, check_state_dict, conv_kernel, dense_kernel
from scenimefy_jax.models.inception import param_shapes

KIND = "fid_inception"

# The last dotted component of a torch key -> (Flax leaf path, layout conversion). Everything before
# it nests unchanged: `Mixed_5b.branch5x5_1.conv.weight` -> params["Mixed_5b"]["branch5x5_1"]["conv"]["kernel"].
_LEAVES = {
    ("conv", "weight"): (("conv", "kernel"), conv_kernel),
    ("bn", "weight"): (("bn", "scale"), None),
    ("bn", "bias"): (("bn", "bias"), None),
    ("bn", "running_mean"): (("bn", "mean"), None),
    ("bn", "running_var"): (("bn", "var"), None),
    ("fc", "weight"): (("fc", "kernel"), dense_kernel),
    ("fc", "bias"): (("fc", "bias"), None),
}


def flax_path(key: str) -> tuple[tuple[str, ...], Any]:
    """torch key -> (Flax parameter path, converter of the array or None for a plain float32 copy)."""
    parts = tuple(key.split("."))
    leaf, convert = _LEAVES[parts[-2:]]
    return parts[:-2] + leaf, convert


def convert_state_dict(checkpoint: Any, source: str = "<state dict>") -> registry.ConvertedModel:
    """Flat state dict of numpy arrays -> `ConvertedModel(kind="fid_inception", params, architecture)`.

    Raises `CheckpointMismatchError` naming every missing, unexpected or mis-shaped key.
    """
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, np.ndarray) for v in checkpoint.values()):
        raise CheckpointError(f"{source}: expected a flat state dict of tensors for a {KIND!r} checkpoint")
    expected = param_shapes()
    sd = {
        k: v
        for k, v in checkpoint.items()
        if not (k.endswith(".bn.num_batches_tracked") and k.replace("num_batches_tracked", "running_var") in expected)
    }
    check_state_dict(sd, expected, source=source, kind=KIND)
    params: dict = {}
    for key, value in sd.items():
        path, convert = flax_path(key)
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = convert(value) if convert else np.asarray(value, np.float32)
    return registry.ConvertedModel(kind=KIND, params=params, architecture={"model": "FIDInceptionV3"})


def _matches(checkpoint: Any) -> bool:
    return (
        isinstance(checkpoint, Mapping)
        and "Conv2d_1a_3x3.conv.weight" in checkpoint
        and "Mixed_7c.branch_pool.conv.weight" in checkpoint
    )


registry.register(
    registry.Converter(
        kind=KIND,
        description="pytorch-fid FID Inception-v3 (pt_inception-2015-12-05-6726825d.pth), FID/KID features",
        matches=_matches,
        convert=convert_state_dict,
    )
)
