"""Mask2Former: converters for all three checkpoint forms, and whole-model parity with transformers.

The reference is transformers' PyTorch `Mask2FormerForUniversalSegmentation` built here with random
weights (it matches the original detectron2 Mask2Former to ~3e-6, docs/reference.md §5.2), followed by
detectron2's semantic inference written out in torch. Tolerance (float32): class logits, mask logits
and `sem_seg` within 1e-4 of each output's largest magnitude, for the tiny config and for Swin-B (whose
24 blocks and 15 attention layers accumulate the most rounding; measured there: 9e-7 on the class
logits, 1.8e-6 on the mask logits, 1.3e-5 on `sem_seg`, identical argmax labels).

The other two forms are written by the test from the same weights, by the inverse of the documented
renaming (docs/reference.md §5.3), and must give bit-identical parameters:
* transformers 4.x names (with the `relative_position_index` buffers 4.x stored); transformers 5.x
  itself must load that folder as its legacy format, which checks the inverse mapping;
* a detectron2 `.pkl` (fused `qkv` / `in_proj`, `relative_position_index`, `criterion.empty_weight`),
  pickled with protocol 2 as old detectron2 files are.
"""
import json
import os
import pickle
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402

from scenimefy_jax import convert  # noqa: E402
from scenimefy_jax.convert import mask2former as m2f  # noqa: E402
from scenimefy_jax.convert.torch_checkpoint import CheckpointError, CheckpointMismatchError  # noqa: E402
from scenimefy_jax.models.mask2former.model import (  # noqa: E402
    Mask2Former,
    Mask2FormerConfig,
    normalize_and_pad,
    semantic_segmentation,
)
from scenimefy_jax.models.mask2former.swin import relative_position_index  # noqa: E402
from scenimefy_jax.segmentation import Segmenter  # noqa: E402

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)

TINY = dict(
    backbone=dict(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=4),
    # 8 heads (pixel and transformer decoder), as the model zoo: shapes alone then define the architecture
    model=dict(feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_layers=2, encoder_feedforward_dim=64,
               decoder_layers=4, num_attention_heads=8, dim_feedforward=64, num_queries=7, num_labels=10),
)
SWIN_B = dict(
    backbone=dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12),
    model=dict(feature_size=256, mask_feature_size=256, hidden_dim=256, encoder_layers=6, encoder_feedforward_dim=1024,
               decoder_layers=10, num_attention_heads=8, dim_feedforward=2048, num_queries=100, num_labels=150),
)


def torch_model(arch, seed=0):
    torch.manual_seed(seed)
    backbone = transformers.SwinConfig(**arch["backbone"], out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.Mask2FormerConfig(backbone_config=backbone, **arch["model"])
    model = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():  # zero biases, unit norms, zero bias tables by default: randomise everything
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "embed" in name or "queries" in name or "table" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model


def torch_sem_seg(model, images):
    """images [B, H, W, 3] 0..255 -> (class logits, mask logits, sem_seg [B, H, W, K]) as detectron2."""
    x = torch.from_numpy((images - MEAN) / STD).permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    x = torch.nn.functional.pad(x, (0, -w % 32, 0, -h % 32))
    with torch.no_grad():
        out = model(pixel_values=x)
        masks = torch.nn.functional.interpolate(out.masks_queries_logits, size=x.shape[-2:], mode="bilinear",
                                                align_corners=False)
        probs = out.class_queries_logits.softmax(-1)[..., :-1]
        sem = torch.einsum("bqc,bqhw->bchw", probs, masks.sigmoid())[:, :, :h, :w]
    return out.class_queries_logits.numpy(), out.masks_queries_logits.numpy(), sem.permute(0, 2, 3, 1).numpy()


def hf_state_dict(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


# -- the inverse renamings, written from docs/reference.md §5.3 ------------------------------------

def to_hf4(sd5, window):
    backbone = "model.pixel_level_module.encoder."
    out = {}
    for key, value in sd5.items():
        if key.startswith(backbone + "swin.layernorm."):
            continue
        if key.startswith(backbone + "swin."):
            rest = key[len(backbone + "swin."):]
            rest = (rest.replace("attention.q_proj.", "attention.self.query.")
                    .replace("attention.k_proj.", "attention.self.key.")
                    .replace("attention.v_proj.", "attention.self.value.")
                    .replace("attention.relative_position_bias.relative_position_bias_table",
                             "attention.self.relative_position_bias_table")
                    .replace("attention.o_proj.", "attention.output.dense.")
                    .replace("mlp.fc1.", "intermediate.dense.").replace("mlp.fc2.", "output.dense."))
            key = backbone + rest
            if key.endswith("attention.self.relative_position_bias_table"):
                out[key.replace("relative_position_bias_table", "relative_position_index")] = \
                    relative_position_index(window).astype(np.int64)
        out[key] = value
    return out


def to_detectron2(sd5, window):
    out = {}
    sw = "model.pixel_level_module.encoder.swin."
    px = "model.pixel_level_module.decoder."
    tr = "model.transformer_module."
    for key, value in sd5.items():
        if key.startswith(sw + "layernorm."):
            continue
        new = key
        if key.startswith(sw + "embeddings.patch_embeddings.projection."):
            new = "backbone.patch_embed.proj." + key.rsplit(".", 1)[1]
        elif key.startswith(sw + "embeddings.norm."):
            new = "backbone.patch_embed.norm." + key.rsplit(".", 1)[1]
        elif key.startswith(sw + "encoder.layers."):
            new = "backbone.layers." + key[len(sw + "encoder.layers."):]
            new = (new.replace(".layernorm_before.", ".norm1.").replace(".layernorm_after.", ".norm2.")
                   .replace(".attention.o_proj.", ".attn.proj.")
                   .replace(".attention.relative_position_bias.relative_position_bias_table", ".attn.relative_position_bias_table"))
            if re.search(r"\.attention\.[qkv]_proj\.", new):
                continue  # fused below
        elif key.startswith("model.pixel_level_module.encoder.hidden_states_norms.stage"):
            stage, leaf = re.match(r".*stage(\d+)\.(\w+)$", key).groups()
            new = f"backbone.norm{int(stage) - 1}.{leaf}"
        elif key.startswith(px):
            rest = key[len(px):]
            rest = re.sub(r"^input_projections\.", "input_proj.", rest)
            rest = re.sub(r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"encoder.layers.\1.norm1.", rest)
            rest = re.sub(r"^encoder\.layers\.(\d+)\.final_layer_norm\.", r"encoder.layers.\1.norm2.", rest)
            rest = re.sub(r"^encoder\.layers\.(\d+)\.fc(\d)\.", r"encoder.layers.\1.linear\2.", rest)
            rest = re.sub(r"^(encoder\.|level_embed)", r"transformer.\1", rest)
            rest = rest.replace("mask_projection.", "mask_features.")
            rest = re.sub(r"^(adapter_1|layer_1)\.0\.weight$", r"\1.weight", rest)
            rest = re.sub(r"^(adapter_1|layer_1)\.1\.", r"\1.norm.", rest)
            new = "sem_seg_head.pixel_decoder." + rest
        elif key.startswith(tr):
            rest = key[len(tr):]
            rest = {"queries_features.weight": "query_feat.weight", "queries_embedder.weight": "query_embed.weight",
                    "level_embed.weight": "level_embed.weight"}.get(rest, rest)
            m = re.match(r"decoder\.layers\.(\d+)\.(.*)$", rest)
            if m:
                i, sub = m.groups()
                if re.match(r"self_attn\.[qkv]_proj\.", sub):
                    continue  # fused below
                for src, dst in (("self_attn.out_proj.", f"transformer_self_attention_layers.{i}.self_attn.out_proj."),
                                 ("self_attn_layer_norm.", f"transformer_self_attention_layers.{i}.norm."),
                                 ("cross_attn.", f"transformer_cross_attention_layers.{i}.multihead_attn."),
                                 ("cross_attn_layer_norm.", f"transformer_cross_attention_layers.{i}.norm."),
                                 ("fc1.", f"transformer_ffn_layers.{i}.linear1."),
                                 ("fc2.", f"transformer_ffn_layers.{i}.linear2."),
                                 ("final_layer_norm.", f"transformer_ffn_layers.{i}.norm.")):
                    if sub.startswith(src):
                        rest = dst + sub[len(src):]
                        break
            rest = rest.replace("decoder.layernorm.", "decoder_norm.")
            rest = re.sub(r"^decoder\.mask_predictor\.mask_embedder\.(\d+)\.0\.", r"mask_embed.layers.\1.", rest)
            new = "sem_seg_head.predictor." + rest
        elif key.startswith("class_predictor."):
            new = "sem_seg_head.predictor.class_embed." + key.rsplit(".", 1)[1]
        out[new] = value
    for key in sd5:  # fuse q|k|v
        m = re.match(re.escape(sw) + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.q_proj\.(weight|bias)$", key)
        if m:
            i, j, leaf = m.groups()
            parts = [sd5[key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[f"backbone.layers.{i}.blocks.{j}.attn.qkv.{leaf}"] = np.concatenate(parts)
            out[f"backbone.layers.{i}.blocks.{j}.attn.relative_position_index"] = relative_position_index(window)
        m = re.match(re.escape(tr) + r"decoder\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)$", key)
        if m:
            i, leaf = m.groups()
            parts = [sd5[key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[f"sem_seg_head.predictor.transformer_self_attention_layers.{i}.self_attn.in_proj_{leaf}"] = \
                np.concatenate(parts)
    return out


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = torch_model(TINY)
    folder = tmp_path_factory.mktemp("hf5")
    model.save_pretrained(folder)
    return model, str(folder)


def _images(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-20, 275, shape).astype(np.float32)  # out-of-range values, as the official selection feeds


def _assert_close(got, want, rel):
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=rel * np.abs(want).max())


def _check_parity(model, params, config, images, rel):
    want_cls, want_masks, want_sem = torch_sem_seg(model, images)
    net = Mask2Former(config)
    cls, masks = jax.jit(net.apply)({"params": params}, normalize_and_pad(images))
    _assert_close(cls, want_cls, rel)
    _assert_close(masks, want_masks, rel)
    sem = semantic_segmentation(cls, masks, images.shape[1:3])
    _assert_close(sem, want_sem, rel)
    return want_sem


# -- tests ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(64, 64), (80, 112)])
def test_hf_folder_matches_transformers(tiny, size):
    """80x112 pads to 96x128 (detectron2's size divisibility) and needs window padding in stages."""
    model, folder = tiny
    converted = m2f.convert_hf_folder(folder)
    config = Mask2FormerConfig.from_dict({k: v for k, v in converted.architecture.items() if k != "model"})
    assert config.decoder_layers == 3 and config.num_labels == 10 and config.encoder_heads == 8
    images = _images((2, *size, 3))
    want_sem = _check_parity(model, converted.params, config, images, 1e-4)
    if size != (80, 112):
        return
    # The public API gives the same scores and their argmax.
    segmenter = Segmenter.from_checkpoint(folder, batch_size=1)
    sem = segmenter.sem_seg(images)
    _assert_close(sem, want_sem, 1e-4)
    np.testing.assert_array_equal(segmenter.labels(images[:1])[0], np.argmax(sem[0], -1))


def test_shape_inference_equals_config(tiny):
    model, folder = tiny
    from_config = m2f.convert_hf_folder(folder)
    inferred = m2f.convert_hf_state_dict(hf_state_dict(model), "sd")
    assert inferred.architecture == from_config.architecture


def _assert_same_params(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def test_transformers_4x_names(tiny, tmp_path):
    model, folder = tiny
    sd4 = to_hf4(hf_state_dict(model), TINY["backbone"]["window_size"])
    assert any(".attention.self.query." in k for k in sd4)
    from safetensors.numpy import save_file

    save_file(sd4, str(tmp_path / "model.safetensors"))
    with open(os.path.join(folder, "config.json")) as f, open(tmp_path / "config.json", "w") as g:
        g.write(f.read())
    # transformers itself reads these names as its legacy format, so the inverse mapping is right: it
    # misses only the unused `swin.layernorm` (absent from 4.x files) and skips only the index buffers
    # (5.x recomputes them)
    _, info = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(str(tmp_path), output_loading_info=True)
    assert all(".swin.layernorm." in k for k in info["missing_keys"]), info["missing_keys"]
    assert all(k.endswith("relative_position_index") for k in info["unexpected_keys"]), info["unexpected_keys"]
    assert not info["mismatched_keys"]
    _assert_same_params(m2f.convert_hf_folder(tmp_path).params, m2f.convert_hf_folder(folder).params)


def test_detectron2_pickle(tiny, tmp_path):
    model, folder = tiny
    d2 = to_detectron2(hf_state_dict(model), TINY["backbone"]["window_size"])
    d2["criterion.empty_weight"] = np.ones(11, np.float32)
    n_blocks = sum(TINY["backbone"]["depths"])
    assert len(d2) == len(hf_state_dict(model)) - 4 * n_blocks - 4 * 3 - 2 + n_blocks  # the documented count rule
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": d2, "__author__": "test"}, f, protocol=2)
    converted = m2f.load_checkpoint(str(path))
    _assert_same_params(converted.params, m2f.convert_hf_folder(folder).params)
    # registry: detected by keys, and the CLI converts it to a loadable model directory
    assert convert.detect_kind(convert.read_checkpoint(path), str(path)) == "mask2former"
    from tools import convert_checkpoint

    out = tmp_path / "converted"
    assert convert_checkpoint.main([str(path), str(out)]) == 0
    images = _images((1, 64, 64, 3), seed=3)
    _, _, want_sem = torch_sem_seg(model, images)
    _assert_close(Segmenter.from_checkpoint(out).sem_seg(images), want_sem, 1e-4)
    _assert_close(Segmenter.from_checkpoint(path).sem_seg(images), want_sem, 1e-4)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_pickle_with_code_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"backbone.patch_embed.proj.weight": _Evil()}}, f)
    with pytest.raises(CheckpointError, match=r"refusing to unpickle global (posix|os|nt)\.system"):
        m2f.load_detectron2_pickle(path)
    assert not (tmp_path / "pwned_marker").exists()
    with open(path, "wb") as f:  # a pickled function reference is refused too
        pickle.dump({"model": {"x": np.zeros(2)}, "hook": json.loads}, f)
    with pytest.raises(CheckpointError, match=r"json\.loads"):
        m2f.load_detectron2_pickle(path)
    (tmp_path / "trunc.pkl").write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="trunc.pkl"):
        m2f.load_detectron2_pickle(tmp_path / "trunc.pkl")


def test_refusals_name_the_keys(tiny):
    model, _ = tiny
    sd = hf_state_dict(model)
    bad = dict(sd)
    missing = "model.transformer_module.decoder.layers.1.fc2.weight"
    misshaped = "model.pixel_level_module.decoder.level_embed"
    del bad[missing]
    bad["model.transformer_module.extra.weight"] = np.zeros(3, np.float32)
    bad[misshaped] = np.zeros((2, 32), np.float32)
    with pytest.raises(CheckpointMismatchError) as e:
        m2f.convert_hf_state_dict(bad, "bad.safetensors")
    message = str(e.value)
    assert missing in message and "model.transformer_module.extra.weight" in message and misshaped in message
    assert "bad.safetensors" in message
    # a wrong relative_position_index buffer is refused by key
    sd4 = to_hf4(sd, TINY["backbone"]["window_size"])
    key = next(k for k in sd4 if k.endswith("relative_position_index"))
    sd4[key] = sd4[key].T.copy()
    with pytest.raises(CheckpointError, match=re.escape(key)):  # named as in the file (4.x)
        m2f.convert_hf_state_dict(sd4, "x")
    # an unknown detectron2 key is listed, not silently dropped
    d2 = to_detectron2(sd, TINY["backbone"]["window_size"])
    d2["sem_seg_head.predictor.surprise.weight"] = np.zeros(1, np.float32)
    with pytest.raises(CheckpointMismatchError, match="surprise"):
        m2f.convert_detectron2(d2, "x.pkl")
    # ... and the file's own (detectron2) names are the ones reported
    del d2["sem_seg_head.predictor.surprise.weight"]
    d2["sem_seg_head.pixel_decoder.transformer.level_embed"] = np.zeros((2, 32), np.float32)
    with pytest.raises(CheckpointMismatchError, match=re.escape("sem_seg_head.pixel_decoder.transformer.level_embed is (2, 32)")):
        m2f.convert_detectron2(d2, "x.pkl")
    d2 = to_detectron2(sd, TINY["backbone"]["window_size"])
    d2["backbone.layers.1.blocks.0.attn.relative_position_index"] = np.zeros((16, 16), np.int64)
    with pytest.raises(CheckpointError, match=re.escape("backbone.layers.1.blocks.0.attn.relative_position_index")):
        m2f.convert_detectron2(d2, "x.pkl")


@pytest.mark.slow  # 20-40 s each on 2 cores; the full-size parts (Swin-B, pixel decoder) run by default
@pytest.mark.parametrize("size", [(256, 256), (256, 320)])
def test_swin_b_matches_transformers(size):
    """The full Swin-B / ADE20K-150 architecture (docs/reference.md §5.2) at Scenimefy's 256x256 and a
    non-square size whose stages need window padding."""
    model = torch_model(SWIN_B)
    converted = m2f.convert_hf_state_dict(hf_state_dict(model), "swin-b")
    config = Mask2FormerConfig.from_dict({k: v for k, v in converted.architecture.items() if k != "model"})
    assert config == Mask2FormerConfig()  # the default architecture is Swin-B / ADE20K-150
    _check_parity(model, converted.params, config, _images((1, *size, 3)), 1e-4)
