"""torchvision `vgg19-*.pth` (e.g. `vgg19-dcbb9e9d.pth`) -> `VGG19Features` params (all 16 convs).

The file holds `features.N.weight/bias` for the 16 convolutions and, in a real torchvision file, the
classifier (`classifier.{0,3,6}.weight/bias`). The classifier is not used: it is accepted and dropped,
but only if it is exactly the torchvision set with the torchvision shapes; a file with the features
alone is accepted too. Use `scenimefy_jax.models.vgg.trim_params(params, last_layer)` for a prefix.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from scenimefy_jax.convert import registry
from scenimefy_jax.convert.torch_checkpoint import CheckpointError, check_state_dict, conv_kernel
from scenimefy_jax.models.vgg import conv_shapes, vgg19_layers

KIND = "vgg19"

CLASSIFIER_SHAPES = {
    "classifier.0.weight": (4096, 512 * 7 * 7),
    "classifier.0.bias": (4096,),
    "classifier.3.weight": (4096, 4096),
    "classifier.3.bias": (4096,),
    "classifier.6.weight": (1000, 4096),
    "classifier.6.bias": (1000,),
}


def feature_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (out_ch, in_ch) in conv_shapes().items():
        shapes[f"features.{i}.weight"] = (out_ch, in_ch, 3, 3)
        shapes[f"features.{i}.bias"] = (out_ch,)
    return shapes


def convert_state_dict(checkpoint: Any, source: str = "<state dict>") -> registry.ConvertedModel:
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, np.ndarray) for v in checkpoint.values()):
        raise CheckpointError(f"{source}: expected a flat state dict of tensors for a {KIND!r} checkpoint")
    sd = dict(checkpoint)
    expected = feature_shapes()
    if any(k.startswith("classifier.") for k in sd):
        expected.update(CLASSIFIER_SHAPES)
    check_state_dict(sd, expected, source=source, kind=KIND)
    params = {
        f"features_{i}": {"kernel": conv_kernel(sd[f"features.{i}.weight"]), "bias": sd[f"features.{i}.bias"].astype(np.float32)}
        for i in conv_shapes()
    }
    return registry.ConvertedModel(
        kind=KIND, params=params, architecture={"model": "VGG19Features", "last_layer": len(vgg19_layers()) - 1}
    )


def _matches(checkpoint: Any) -> bool:
    return isinstance(checkpoint, Mapping) and "features.0.weight" in checkpoint and "features.34.weight" in checkpoint


registry.register(
    registry.Converter(
        kind=KIND,
        description="torchvision VGG19 (vgg19-*.pth), features used for the content loss / fine-tuning",
        matches=_matches,
        convert=convert_state_dict,
    )
)
