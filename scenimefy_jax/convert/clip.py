"""Hugging Face CLIP checkpoints -> `CLIPVisionModel` params (vision tower + `visual_projection`).

* `load_hf_clip(folder)`: a Hugging Face folder with `config.json` and `model.safetensors` or
  `pytorch_model.bin` (read with `weights_only=True`), e.g. `openai/clip-vit-base-patch32`. The
  architecture comes from `config.json`. Returns `(CLIPVisionModel, params)`.
* Registry kind `clip`: a bare `CLIPModel` state dict in a `.pth`/`.bin` file; the architecture is
  inferred from the shapes (heads = width / 64, true for every OpenAI CLIP ViT; `quick_gelu`).

Strict on the vision half: every `vision_model.*` key and `visual_projection.weight` must be present
with the expected shape, and no other vision key may appear. Text-tower keys (`text_model.*`,
`text_projection.weight`, `logit_scale`) are accepted and ignored, as are the `position_ids` buffers
of older checkpoints (verified to be `arange`).
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import jax
import numpy as np

from scenimefy_jax.convert import registry
from scenimefy_jax.convert.torch_checkpoint import (
    CheckpointError,
    check_state_dict,
    conv_kernel,
    dense_kernel,
    load_torch_checkpoint,
)
from scenimefy_jax.models.clip import CLIPVisionModel

KIND = "clip"
_IGNORED = re.compile(r"^(text_model\..*|text_projection\.weight|logit_scale)$")


def _flax_path_to_key(path: tuple[str, ...]) -> str:
    parts = [re.sub(r"_(\d+)$", r".\1", p) for p in path]
    leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(parts[-1], parts[-1])
    key = ".".join(parts[:-1] + [leaf])
    return key if key.startswith("visual_projection") else "vision_model." + key


def _torch_shape(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if key.endswith("patch_embedding.weight"):  # HWIO <- OIHW
        kh, kw, i, o = shape
        return (o, i, kh, kw)
    if len(shape) == 2 and not key.endswith("position_embedding.weight"):
        return shape[::-1]
    return tuple(shape)


def model_from_config(config: Mapping[str, Any]) -> CLIPVisionModel:
    """`CLIPVisionModel` from a Hugging Face `CLIPConfig` (or `CLIPVisionConfig`) dict."""
    vision = config.get("vision_config", config)
    defaults = CLIPVisionModel()
    return CLIPVisionModel(
        image_size=int(vision.get("image_size", defaults.image_size)),
        patch_size=int(vision.get("patch_size", defaults.patch_size)),
        hidden_size=int(vision.get("hidden_size", defaults.hidden_size)),
        intermediate_size=int(vision.get("intermediate_size", defaults.intermediate_size)),
        num_layers=int(vision.get("num_hidden_layers", defaults.num_layers)),
        num_heads=int(vision.get("num_attention_heads", defaults.num_heads)),
        projection_dim=int(config.get("projection_dim", vision.get("projection_dim", defaults.projection_dim))),
        layer_norm_eps=float(vision.get("layer_norm_eps", defaults.layer_norm_eps)),
        hidden_act=str(vision.get("hidden_act", defaults.hidden_act)),
    )


def architecture(model: CLIPVisionModel) -> dict:
    names = ("image_size", "patch_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
             "projection_dim", "layer_norm_eps", "hidden_act")
    return {"model": "CLIPVisionModel", **{n: getattr(model, n) for n in names}}


def infer_model(sd: Mapping[str, np.ndarray], source: str) -> CLIPVisionModel:
    try:
        hidden = int(sd["vision_model.embeddings.class_embedding"].shape[0])
        patch = int(sd["vision_model.embeddings.patch_embedding.weight"].shape[-1])
        n_pos = int(sd["vision_model.embeddings.position_embedding.weight"].shape[0])
        layers = len({k.split(".")[3] for k in sd if k.startswith("vision_model.encoder.layers.")})
        inter = int(sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0])
        proj = int(sd["visual_projection.weight"].shape[0])
    except KeyError as e:
        raise CheckpointError(f"{source}: not a Hugging Face CLIPModel state dict (missing {e})") from None
    side = int(round((n_pos - 1) ** 0.5))
    return CLIPVisionModel(image_size=side * patch, patch_size=patch, hidden_size=hidden, intermediate_size=inter,
                           num_layers=layers, num_heads=max(1, hidden // 64), projection_dim=proj)


def convert_state_dict(
    sd: Mapping[str, np.ndarray], source: str = "<state dict>", *, model: CLIPVisionModel | None = None
) -> registry.ConvertedModel:
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{source}: expected a CLIPModel state dict")
    model = model or infer_model(sd, source)
    for key in [k for k in sd if k.endswith("embeddings.position_ids")]:
        if not np.array_equal(np.asarray(sd[key]).reshape(-1), np.arange(np.size(sd[key]))):
            raise CheckpointError(f"{source}: buffer {key} is not arange; refusing to convert")
    vision = {k: v for k, v in sd.items() if not _IGNORED.match(k) and not k.endswith("embeddings.position_ids")}
    x = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, 3), np.float32)
    shapes = jax.eval_shape(lambda k, x: model.init(k, x), jax.random.key(0), x)["params"]
    leaves = {tuple(p.key for p in path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]}
    expected = {_flax_path_to_key(p): _torch_shape(_flax_path_to_key(p), s) for p, s in leaves.items()}
    check_state_dict(vision, expected, source=source, kind=KIND)
    params: dict = {}
    for path in leaves:
        key = _flax_path_to_key(path)
        value = np.asarray(vision[key], dtype=np.float32)
        if key.endswith("patch_embedding.weight"):
            value = conv_kernel(value)
        elif value.ndim == 2 and not key.endswith("position_embedding.weight"):
            value = dense_kernel(value)
        node = params
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = np.ascontiguousarray(value)
    return registry.ConvertedModel(kind=KIND, params=params, architecture=architecture(model))


def load_hf_clip(folder: str | os.PathLike) -> tuple[CLIPVisionModel, dict]:
    """Reads a Hugging Face CLIP folder (`config.json` + `model.safetensors` or `pytorch_model.bin`)."""
    folder = os.fspath(folder)
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{folder}: no config.json (expected a Hugging Face CLIP model folder)")
    with open(config_path) as f:
        config = json.load(f)
    model = model_from_config(config)
    st = os.path.join(folder, "model.safetensors")
    pt = os.path.join(folder, "pytorch_model.bin")
    if os.path.isfile(st):
        from safetensors.numpy import load_file

        try:
            sd = load_file(st)
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{st}: cannot be read as safetensors: {e}") from e
        source = st
    elif os.path.isfile(pt):
        sd = load_torch_checkpoint(pt)
        source = pt
    else:
        raise CheckpointError(f"{folder}: neither model.safetensors nor pytorch_model.bin found")
    return model, convert_state_dict(sd, source, model=model).params


def _matches(checkpoint: Any) -> bool:
    return isinstance(checkpoint, Mapping) and "visual_projection.weight" in checkpoint and (
        "vision_model.embeddings.class_embedding" in checkpoint
    )


registry.register(
    registry.Converter(
        kind=KIND,
        description="Hugging Face CLIPModel weights (vision tower + visual_projection; text tower ignored)",
        matches=_matches,
        convert=lambda checkpoint, source: convert_state_dict(checkpoint, source),
    )
)
