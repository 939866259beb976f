"""Mask2Former checkpoints -> `scenimefy_jax.models.mask2former` params (docs/reference.md §5.3).

Three published forms, all renamed to transformers 5.x keys and then converted by one strict rule
(`mask2former_keys`):

* detectron2 `model_final_*.pkl` (the official Mask2Former model zoo; Scenimefy uses
  `model_final_503e96.pkl`): a pickle of `{"model": {name: ndarray}, "__author__": ...}`. It is read
  by `load_detectron2_pickle`, an unpickler that rebuilds numpy arrays and plain containers and
  refuses every other global by name, so a file can never run code. The architecture is inferred
  from the shapes (the zoo's configs all use 8 attention heads and 4 sampling points, which shapes
  cannot tell apart).
* Hugging Face folders (`config.json` + `model.safetensors` or `pytorch_model.bin`) with transformers
  5.x names or the 4.x names older Hub uploads carry; the architecture comes from `config.json`.
* A bare transformers state dict (`.bin` / `.pth` / `.safetensors`), architecture inferred as for `.pkl`.

Every form is strict: every missing, unexpected and mis-shaped key is listed; a stored
`relative_position_index` must equal the one the model computes; `criterion.empty_weight` (a loss
buffer) and transformers' unused `swin.layernorm` are the only entries dropped.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import re
from typing import Any, Mapping

import numpy as np

from scenimefy_jax.convert import mask2former_keys, registry
from scenimefy_jax.convert.torch_checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    check_state_dict,
    load_torch_checkpoint,
)

KIND = "mask2former"
_BACKBONE = "model.pixel_level_module.encoder."
_PIXEL = "model.pixel_level_module.decoder."
_TRANSFORMER = "model.transformer_module."
_IGNORED_5X = re.compile(r"^(criterion\.empty_weight|model\.pixel_level_module\.encoder\.swin\.layernorm\.(weight|bias))$")


# ----------------------------------------------------------------------------- reading files safely

# (module, name) pairs a detectron2 weight pickle may reference: numpy array reconstruction, dtypes,
# scalars, and plain containers. `_codecs.encode` rebuilds `bytes` in protocol-2 pickles written by
# Python 3 (it only encodes a string). Nothing here can run code.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("collections", "OrderedDict"), ("_codecs", "encode"),
}


class _WeightsOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise CheckpointError(
            f"{self._source}: refusing to unpickle global {module}.{name} (only numpy arrays and plain "
            "containers are allowed in a weights file; nothing was executed)"
        )

    def persistent_load(self, pid):
        raise CheckpointError(f"{self._source}: refusing a pickle with persistent ids (not a detectron2 weights file)")


def load_detectron2_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The `model` dict of a detectron2 `.pkl`, read without executing anything."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = _WeightsOnlyUnpickler(io.BytesIO(data), path).load()
    except CheckpointError:
        raise
    except Exception as e:  # truncated or corrupt pickles raise many types
        raise CheckpointError(f"{path}: cannot be read as a detectron2 weights pickle: {type(e).__name__}: {e}") from e
    model = obj.get("model") if isinstance(obj, Mapping) else None
    if not isinstance(model, Mapping):
        raise CheckpointError(f"{path}: not a detectron2 checkpoint (expected a dict with a 'model' entry)")
    out = {}
    for k, v in model.items():
        if not isinstance(v, np.ndarray):
            raise CheckpointError(f"{path}: entry {k} is a {type(v).__name__}, not an array")
        out[str(k)] = v
    return out


@dataclasses.dataclass(frozen=True)
class HFCheckpoint:
    """A Hugging Face model folder: its `config.json` and its state dict (numpy)."""

    config: dict
    state_dict: dict
    source: str


def _read_state_dict_file(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        try:
            return load_file(path)
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{path}: cannot be read as safetensors: {e}") from e
    return load_torch_checkpoint(path)


def load_hf_folder_weights_path(folder: str | os.PathLike) -> str:
    """The weights file of a Hugging Face folder (`model.safetensors`, else `pytorch_model.bin`)."""
    folder = os.fspath(folder)
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise CheckpointError(f"{folder}: neither model.safetensors nor pytorch_model.bin found")


def load_hf_folder(folder: str | os.PathLike) -> HFCheckpoint:
    folder = os.fspath(folder)
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{folder}: no config.json (expected a Hugging Face model folder)")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config_path}: not valid JSON: {e}") from e
    path = load_hf_folder_weights_path(folder)
    return HFCheckpoint(config=config, state_dict=_read_state_dict_file(path), source=path)


# ----------------------------------------------------------------------------- renaming to 5.x keys

def _split_thirds(sd: dict, key: str, targets: tuple[str, str, str], source: str) -> None:
    value = sd.pop(key)
    if value.shape[0] % 3:
        raise CheckpointError(f"{source}: {key} has shape {value.shape}; its first axis must split into q, k, v thirds")
    for target, part in zip(targets, np.split(value, 3, axis=0)):
        sd[target] = part


_D2_RULES = [  # (pattern, replacement) on detectron2 keys, applied in order, first match wins
    (r"^backbone\.patch_embed\.proj\.", _BACKBONE + "swin.embeddings.patch_embeddings.projection."),
    (r"^backbone\.patch_embed\.norm\.", _BACKBONE + "swin.embeddings.norm."),
    (r"^backbone\.layers\.(\d+)\.blocks\.(\d+)\.norm1\.", _BACKBONE + r"swin.encoder.layers.\1.blocks.\2.layernorm_before."),
    (r"^backbone\.layers\.(\d+)\.blocks\.(\d+)\.norm2\.", _BACKBONE + r"swin.encoder.layers.\1.blocks.\2.layernorm_after."),
    (r"^backbone\.layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.", _BACKBONE + r"swin.encoder.layers.\1.blocks.\2.attention.o_proj."),
    (r"^backbone\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.", _BACKBONE + r"swin.encoder.layers.\1.blocks.\2.attention.qkv."),
    (r"^backbone\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$",
     _BACKBONE + r"swin.encoder.layers.\1.blocks.\2.attention.relative_position_bias.relative_position_bias_table"),
    (r"^backbone\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_index$",
     _BACKBONE + r"swin.encoder.layers.\1.blocks.\2.attention.relative_position_index"),
    (r"^backbone\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.", _BACKBONE + r"swin.encoder.layers.\1.blocks.\2.mlp.\3."),
    (r"^backbone\.layers\.(\d+)\.downsample\.(reduction|norm)\.", _BACKBONE + r"swin.encoder.layers.\1.downsample.\2."),
    (r"^backbone\.norm(\d+)\.", None),  # stage k-1 output norm -> hidden_states_norms.stage<k>, below
    (r"^sem_seg_head\.pixel_decoder\.input_proj\.(\d+)\.(\d+)\.", _PIXEL + r"input_projections.\1.\2."),
    (r"^sem_seg_head\.pixel_decoder\.transformer\.level_embed$", _PIXEL + "level_embed"),
    (r"^sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.self_attn\.", _PIXEL + r"encoder.layers.\1.self_attn."),
    (r"^sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm1\.", _PIXEL + r"encoder.layers.\1.self_attn_layer_norm."),
    (r"^sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm2\.", _PIXEL + r"encoder.layers.\1.final_layer_norm."),
    (r"^sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.linear(1|2)\.", _PIXEL + r"encoder.layers.\1.fc\2."),
    (r"^sem_seg_head\.pixel_decoder\.mask_features\.", _PIXEL + "mask_projection."),
    (r"^sem_seg_head\.pixel_decoder\.(adapter_1|layer_1)\.weight$", _PIXEL + r"\1.0.weight"),
    (r"^sem_seg_head\.pixel_decoder\.(adapter_1|layer_1)\.norm\.", _PIXEL + r"\1.1."),
    (r"^sem_seg_head\.predictor\.query_feat\.weight$", _TRANSFORMER + "queries_features.weight"),
    (r"^sem_seg_head\.predictor\.query_embed\.weight$", _TRANSFORMER + "queries_embedder.weight"),
    (r"^sem_seg_head\.predictor\.level_embed\.weight$", _TRANSFORMER + "level_embed.weight"),
    (r"^sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$",
     _TRANSFORMER + r"decoder.layers.\1.self_attn.in_proj_\2"),
    (r"^sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.out_proj\.",
     _TRANSFORMER + r"decoder.layers.\1.self_attn.out_proj."),
    (r"^sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.norm\.",
     _TRANSFORMER + r"decoder.layers.\1.self_attn_layer_norm."),
    (r"^sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.",
     _TRANSFORMER + r"decoder.layers.\1.cross_attn."),
    (r"^sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.norm\.",
     _TRANSFORMER + r"decoder.layers.\1.cross_attn_layer_norm."),
    (r"^sem_seg_head\.predictor\.transformer_ffn_layers\.(\d+)\.linear(1|2)\.", _TRANSFORMER + r"decoder.layers.\1.fc\2."),
    (r"^sem_seg_head\.predictor\.transformer_ffn_layers\.(\d+)\.norm\.", _TRANSFORMER + r"decoder.layers.\1.final_layer_norm."),
    (r"^sem_seg_head\.predictor\.decoder_norm\.", _TRANSFORMER + "decoder.layernorm."),
    (r"^sem_seg_head\.predictor\.class_embed\.", "class_predictor."),
    (r"^sem_seg_head\.predictor\.mask_embed\.layers\.(\d+)\.", _TRANSFORMER + r"decoder.mask_predictor.mask_embedder.\1.0."),
    (r"^criterion\.empty_weight$", "criterion.empty_weight"),
]
_D2_COMPILED = [(re.compile(p), r) for p, r in _D2_RULES]


def _rename_d2_key(key: str) -> str | None:
    for pattern, replacement in _D2_COMPILED:
        m = pattern.match(key)
        if not m:
            continue
        if replacement is None:  # backbone.norm<k> -> hidden_states_norms.stage<k+1>
            return _BACKBONE + f"hidden_states_norms.stage{int(m[1]) + 1}." + key[m.end():]
        return pattern.sub(replacement, key, count=1)
    return None


def detectron2_to_hf(model: Mapping[str, np.ndarray], source: str, names: dict | None = None) -> dict[str, np.ndarray]:
    """detectron2 Mask2Former names -> transformers 5.x names (qkv / in_proj split into thirds).

    `names`, if given, receives `{new key: detectron2 key}` so that errors can name the file's keys.
    """
    names = {} if names is None else names
    out: dict[str, np.ndarray] = {}
    for key, value in model.items():
        new = _rename_d2_key(key)
        new = new if new is not None else key
        out[new] = value
        names[new] = key
    fused = [k for k in out if re.search(r"\.attention\.qkv\.(weight|bias)$", k)]
    fused += [k for k in out if k.startswith(_TRANSFORMER) and re.search(r"\.self_attn\.in_proj_(weight|bias)$", k)]
    for key in fused:
        leaf = key.rsplit(".", 1)[1].replace("in_proj_", "")
        base = key[: key.rindex("qkv." if ".qkv." in key else "in_proj_")]
        targets = tuple(f"{base}{p}_proj.{leaf}" for p in "qkv")
        for target in targets:
            names[target] = names[key]
        _split_thirds(out, key, targets, source)
    return out


_HF4_RULES = [  # transformers 4.x -> 5.x, below the backbone prefix (Swin renames of transformers 5.x)
    (r"^encoder\.", "swin.encoder."),
    (r"^embeddings\.", "swin.embeddings."),
    (r"\.attention\.self\.query\.", ".attention.q_proj."),
    (r"\.attention\.self\.key\.", ".attention.k_proj."),
    (r"\.attention\.self\.value\.", ".attention.v_proj."),
    (r"\.attention\.self\.relative_position_bias_table$", ".attention.relative_position_bias.relative_position_bias_table"),
    (r"\.attention\.self\.relative_position_index$", ".attention.relative_position_index"),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]
_HF4_COMPILED = [(re.compile(p), r) for p, r in _HF4_RULES]


def _rename_hf4_key(key: str) -> str:
    if key.startswith(_BACKBONE) and not key.startswith((_BACKBONE + "hidden_states_norms.", _BACKBONE + "swin.")):
        rest = key[len(_BACKBONE):]
        for pattern, replacement in _HF4_COMPILED:
            rest = pattern.sub(replacement, rest)
        return _BACKBONE + rest
    return key


def hf4_to_hf5(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Renames transformers 4.x backbone keys to 5.x (other keys are the same in both)."""
    return {_rename_hf4_key(k): v for k, v in sd.items()}


# ----------------------------------------------------------------------------- architecture

def config_from_hf(config: Mapping[str, Any], source: str):
    """`Mask2FormerConfig` from a transformers `Mask2FormerConfig` dict (config.json)."""
    from scenimefy_jax.models.mask2former.model import Mask2FormerConfig

    if config.get("model_type") != "mask2former":
        raise CheckpointError(f"{source}: config.json is for model_type {config.get('model_type')!r}, not mask2former")
    backbone = config.get("backbone_config") or {}
    if backbone.get("model_type", "swin") != "swin":
        raise CheckpointError(f"{source}: backbone {backbone.get('model_type')!r} is not supported (only Swin)")
    labels = config.get("id2label")
    num_labels = len(labels) if labels else int(config.get("num_labels", 150))
    d = Mask2FormerConfig()
    try:
        return Mask2FormerConfig(
            embed_dim=int(backbone.get("embed_dim", 96)),
            depths=tuple(int(x) for x in backbone.get("depths", (2, 2, 6, 2))),
            swin_heads=tuple(int(x) for x in backbone.get("num_heads", (3, 6, 12, 24))),
            window_size=int(backbone.get("window_size", 7)),
            mlp_ratio=float(backbone.get("mlp_ratio", 4.0)),
            feature_size=int(config.get("feature_size", d.feature_size)),
            mask_feature_size=int(config.get("mask_feature_size", d.mask_feature_size)),
            encoder_layers=int(config.get("encoder_layers", d.encoder_layers)),
            encoder_feedforward_dim=int(config.get("encoder_feedforward_dim", d.encoder_feedforward_dim)),
            encoder_heads=int(config.get("num_attention_heads", d.encoder_heads)),
            encoder_points=d.encoder_points,
            hidden_dim=int(config.get("hidden_dim", d.hidden_dim)),
            num_queries=int(config.get("num_queries", d.num_queries)),
            decoder_layers=int(config.get("decoder_layers", d.decoder_layers + 1)) - 1,
            decoder_heads=int(config.get("num_attention_heads", d.decoder_heads)),
            dim_feedforward=int(config.get("dim_feedforward", d.dim_feedforward)),
            num_labels=num_labels,
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: config.json has an unusable value: {e}") from e


def infer_config(sd: Mapping[str, np.ndarray], source: str):
    """`Mask2FormerConfig` from the shapes of a 5.x-named state dict (8 heads, 4 points assumed)."""
    from scenimefy_jax.models.mask2former.model import Mask2FormerConfig

    d = Mask2FormerConfig()

    def shape(key):
        if key not in sd:
            raise CheckpointError(f"{source}: not a Mask2Former checkpoint (missing {key})")
        return np.shape(sd[key])

    def count(pattern):
        rx = re.compile(pattern)
        return len({m[1] for k in sd if (m := rx.match(k))})

    sw = _BACKBONE + "swin.encoder.layers."
    n_stages = count(re.escape(sw) + r"(\d+)\.")
    depths = tuple(count(re.escape(f"{sw}{i}.blocks.") + r"(\d+)\.") for i in range(n_stages))
    heads = tuple(int(shape(f"{sw}{i}.blocks.0.attention.relative_position_bias.relative_position_bias_table")[1])
                  for i in range(n_stages))
    table = shape(f"{sw}0.blocks.0.attention.relative_position_bias.relative_position_bias_table")[0]
    window = (int(round(table ** 0.5)) + 1) // 2
    embed = int(shape(_BACKBONE + "swin.embeddings.patch_embeddings.projection.weight")[0])
    fc1 = shape(f"{sw}0.blocks.0.mlp.fc1.weight")[0]
    offsets = shape(_PIXEL + "encoder.layers.0.self_attn.sampling_offsets.weight")[0]  # heads * 3 levels * points * 2
    points = offsets // (d.encoder_heads * 3 * 2)
    return Mask2FormerConfig(
        embed_dim=embed, depths=depths, swin_heads=heads, window_size=window, mlp_ratio=fc1 / embed,
        feature_size=int(shape(_PIXEL + "mask_projection.weight")[1]),
        mask_feature_size=int(shape(_PIXEL + "mask_projection.weight")[0]),
        encoder_layers=count(re.escape(_PIXEL + "encoder.layers.") + r"(\d+)\."),
        encoder_feedforward_dim=int(shape(_PIXEL + "encoder.layers.0.fc1.weight")[0]),
        encoder_heads=d.encoder_heads, encoder_points=int(points),
        hidden_dim=int(shape(_TRANSFORMER + "queries_features.weight")[1]),
        num_queries=int(shape(_TRANSFORMER + "queries_features.weight")[0]),
        decoder_layers=count(re.escape(_TRANSFORMER + "decoder.layers.") + r"(\d+)\."),
        decoder_heads=d.decoder_heads,
        dim_feedforward=int(shape(_TRANSFORMER + "decoder.layers.0.fc1.weight")[0]),
        num_labels=int(shape("class_predictor.weight")[0]) - 1,
    )


# ----------------------------------------------------------------------------- conversion

def _check_relative_position_index(sd: dict, config, source: str, names: Mapping[str, str]) -> None:
    from scenimefy_jax.models.mask2former.swin import relative_position_index

    expected = relative_position_index(config.window_size)
    for key in [k for k in sd if k.endswith(".attention.relative_position_index")]:
        value = np.asarray(sd.pop(key))
        if value.shape != expected.shape or not np.array_equal(value, expected):
            raise CheckpointError(
                f"{source}: buffer {names.get(key, key)} differs from the relative position index of window "
                f"{config.window_size} (shape {value.shape}); refusing to convert"
            )


def convert_hf_state_dict(sd: Mapping[str, np.ndarray], source: str = "<state dict>", *, config=None,
                          names: Mapping[str, str] | None = None) -> registry.ConvertedModel:
    """A transformers (4.x or 5.x names) state dict -> `ConvertedModel`; `config` inferred if None.

    `names` maps keys of `sd` to the names the file used (detectron2), for error messages.
    """
    from scenimefy_jax.models.mask2former.model import param_shapes

    original = {}
    renamed = {}
    for key, value in sd.items():
        new = _rename_hf4_key(key)
        if not _IGNORED_5X.match(new):
            renamed[new] = np.asarray(value)
            original[new] = (names or {}).get(key, key)
    config = config or infer_config(renamed, source)
    _check_relative_position_index(renamed, config, source, original)
    shapes = param_shapes(config)
    # Flax paths below `pixel_level_module` / `transformer_module` are transformers' `model.*` keys.
    expected = {_hf_key(k): v for k, v in mask2former_keys.expected_keys(shapes).items()}
    try:
        check_state_dict(renamed, expected, source=source, kind=KIND)
    except CheckpointMismatchError as e:  # name the file's own keys where they differ from 5.x names
        raise CheckpointMismatchError(
            source, KIND, e.missing, [original.get(k, k) for k in e.unexpected],
            [(original.get(k, k), got, want) for k, got, want in e.misshaped]) from None
    stripped = {k[len("model."):] if k.startswith("model.") else k: v for k, v in renamed.items()}
    params = mask2former_keys.params_from_state_dict(stripped, shapes, source=source, kind=KIND)
    return registry.ConvertedModel(kind=KIND, params=params, architecture={"model": "Mask2Former", **config.to_dict()})


def convert_detectron2(model: Mapping[str, np.ndarray], source: str = "<detectron2>", *, config=None
                       ) -> registry.ConvertedModel:
    names: dict[str, str] = {}
    return convert_hf_state_dict(detectron2_to_hf(model, source, names), source, config=config, names=names)


def convert_hf_folder(folder: str | os.PathLike) -> registry.ConvertedModel:
    ckpt = load_hf_folder(folder)
    return convert_hf_state_dict(ckpt.state_dict, ckpt.source, config=config_from_hf(ckpt.config, ckpt.source))


def load_checkpoint(path: str | os.PathLike) -> registry.ConvertedModel:
    """Any Mask2Former checkpoint form -> `ConvertedModel` (`.pkl`, HF folder, bare state dict)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return convert_hf_folder(path)
    if path.endswith(".pkl"):
        return convert_detectron2(load_detectron2_pickle(path), path)
    return convert_hf_state_dict(_read_state_dict_file(path), path)


def _hf_key(flax_key: str) -> str:
    return flax_key if flax_key.startswith("class_predictor.") else "model." + flax_key


def _is_detectron2(checkpoint: Any) -> bool:
    return isinstance(checkpoint, Mapping) and any(str(k).startswith("sem_seg_head.predictor.") for k in checkpoint)


def _matches(checkpoint: Any) -> bool:
    if isinstance(checkpoint, HFCheckpoint):
        return checkpoint.config.get("model_type") == "mask2former"
    return isinstance(checkpoint, Mapping) and (
        _is_detectron2(checkpoint) or "model.transformer_module.queries_features.weight" in checkpoint)


def _convert(checkpoint: Any, source: str) -> registry.ConvertedModel:
    if isinstance(checkpoint, HFCheckpoint):
        return convert_hf_state_dict(checkpoint.state_dict, checkpoint.source,
                                     config=config_from_hf(checkpoint.config, checkpoint.source))
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{source}: expected a Mask2Former state dict")
    if _is_detectron2(checkpoint):
        return convert_detectron2(checkpoint, source)
    return convert_hf_state_dict(checkpoint, source)


registry.register(
    registry.Converter(
        kind=KIND,
        description="Mask2Former semantic segmenter (detectron2 .pkl, Hugging Face folder or state dict)",
        matches=_matches,
        convert=_convert,
    )
)
