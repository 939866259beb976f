"""Official `*_net_D.pth` / `*_net_D_p.pth` (NLayerDiscriminator state dicts) -> `PatchGANDiscriminator`.

Two kinds, told apart by the input channels of `model.0.weight` (docs/reference.md §2.3):
`patchgan` (D, 3-channel anime/fake input) and `patchgan_pair` (D_p, 6 channels: photo then anime).
`ndf` is read from the file (64 for the official run); every key and shape is then checked strictly,
and the three Downsample `filt` buffers must hold the fixed blur filter.
"""
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
from scenimefy_jax.models.discriminator import conv_indices
from scenimefy_jax.models.layers import downsample_filter

KINDS = {3: "patchgan", 6: "patchgan_pair"}
N_LAYERS = 3


def expected_shapes(input_nc: int = 3, ndf: int = 64, n_layers: int = N_LAYERS) -> dict[str, tuple[int, ...]]:
    """Every key of the official NLayerDiscriminator state dict (13 for three layers)."""
    shapes: dict[str, tuple[int, ...]] = {}
    channels = [input_nc] + [ndf * min(2**n, 8) for n in range(n_layers + 1)] + [1]
    for i, index in enumerate(conv_indices(n_layers)):
        shapes[f"model.{index}.weight"] = (channels[i + 1], channels[i], 4, 4)
        shapes[f"model.{index}.bias"] = (channels[i + 1],)
    for n in range(n_layers):  # Downsample after conv 0 and after each middle conv
        index = 2 + 4 * n
        shapes[f"model.{index}.filt"] = (channels[n + 1], 1, 3, 3)
    return shapes


def _state_dict(checkpoint: Any, source: str, kind: str) -> Mapping[str, np.ndarray]:
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, np.ndarray) for v in checkpoint.values()):
        raise CheckpointError(f"{source}: expected a flat state dict of tensors for a {kind!r} checkpoint")
    if checkpoint and all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k[len("module.") :]: v for k, v in checkpoint.items()}
    return checkpoint


def _input_channels(checkpoint: Any) -> int | None:
    if not isinstance(checkpoint, Mapping):
        return None
    w = checkpoint.get("model.0.weight", checkpoint.get("module.model.0.weight"))
    if getattr(w, "ndim", 0) != 4 or tuple(w.shape[2:]) != (4, 4):
        return None
    return int(w.shape[1])


def _converter(input_nc: int):
    kind = KINDS[input_nc]

    def convert(checkpoint: Any, source: str = "<state dict>") -> registry.ConvertedModel:
        sd = _state_dict(checkpoint, source, kind)
        if "model.0.weight" not in sd:
            raise CheckpointError(f"{source}: no key model.0.weight; not a {kind!r} checkpoint")
        ndf = int(sd["model.0.weight"].shape[0])
        check_state_dict(sd, expected_shapes(input_nc, ndf), source=source, kind=kind)
        for key, shape in expected_shapes(input_nc, ndf).items():
            if key.endswith(".filt"):
                check_fixed_buffer(sd[key], downsample_filter(shape[0]), key=key, source=source)
        params = {
            f"model_{i}": {"kernel": conv_kernel(sd[f"model.{i}.weight"]), "bias": sd[f"model.{i}.bias"].astype(np.float32)}
            for i in conv_indices(N_LAYERS)
        }
        return registry.ConvertedModel(
            kind=kind,
            params=params,
            architecture={"model": "PatchGANDiscriminator", "ndf": ndf, "n_layers": N_LAYERS, "input_nc": input_nc},
        )

    def matches(checkpoint: Any) -> bool:
        return _input_channels(checkpoint) == input_nc and any(str(k).endswith("model.14.weight") for k in checkpoint)

    return kind, convert, matches


convert_discriminator = _converter(3)[1]
convert_pair_discriminator = _converter(6)[1]

for _nc, _description in (
    (3, "Scenimefy PatchGAN discriminator D, official *_net_D.pth (3-channel input)"),
    (6, "Scenimefy conditional PatchGAN D_p, official *_net_D_p.pth (6-channel photo+anime input)"),
):
    _kind, _convert, _matches = _converter(_nc)
    registry.register(registry.Converter(kind=_kind, description=_description, matches=_matches, convert=_convert))
