"""CLIP vision tower parity with transformers' PyTorch `CLIPModel.get_image_features` (random weights),
and the PyTorch-exact bicubic resize of the CLIP preprocessing (docs/reference.md §4.4).

Tolerances (float32): features agree to 1e-4 relative to their scale (small config) and 5e-4 (ViT-B/32,
12 layers of accumulated summation-order differences); the resize agrees to 1e-5 absolute.
"""
import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from scenimefy_jax.convert import clip as convert_clip  # noqa: E402
from scenimefy_jax.models import clip  # noqa: E402

SMALL_VISION = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                    image_size=64, patch_size=16)
SMALL_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  vocab_size=49408, max_position_embeddings=16)


def _torch_clip(vision, projection_dim, seed=0):
    torch.manual_seed(seed)
    config = transformers.CLIPConfig(text_config=SMALL_TEXT, vision_config=vision, projection_dim=projection_dim)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():  # default init has zero biases and unit LayerNorms: randomise them too
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return config, model


def _features(model, pixels_nhwc):
    with torch.no_grad():
        out = model.get_image_features(pixel_values=torch.from_numpy(pixels_nhwc).permute(0, 3, 1, 2))
    out = out.pooler_output if hasattr(out, "pooler_output") else out
    return out.numpy()


def test_small_config_matches_transformers(tmp_path):
    config, tmodel = _torch_clip(SMALL_VISION, 24)
    sd = {k: v.numpy() for k, v in tmodel.state_dict().items()}
    converted = convert_clip.convert_state_dict(sd, "test", model=convert_clip.model_from_config(config.to_dict()))
    model = convert_clip.model_from_config(config.to_dict())
    x = np.random.default_rng(0).standard_normal((3, 64, 64, 3)).astype(np.float32)
    want = _features(tmodel, x)
    got = np.asarray(jax.jit(model.apply)({"params": converted.params}, x))
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)
    # the shape-inferred model (registry path) is the same network
    inferred = convert_clip.infer_model(sd, "test")
    assert inferred == model
    # Hugging Face folder round trip (safetensors)
    tmodel.save_pretrained(tmp_path)
    loaded_model, params = convert_clip.load_hf_clip(tmp_path)
    assert loaded_model == model
    np.testing.assert_array_equal(
        params["encoder"]["layers_1"]["mlp"]["fc1"]["kernel"], converted.params["encoder"]["layers_1"]["mlp"]["fc1"]["kernel"]
    )


def test_strict_vision_keys_text_keys_ignored():
    config, tmodel = _torch_clip(SMALL_VISION, 24)
    sd = {k: v.numpy() for k, v in tmodel.state_dict().items()}
    assert any(k.startswith("text_model.") for k in sd)  # accepted and ignored
    broken = dict(sd)
    del broken["vision_model.encoder.layers.1.mlp.fc2.bias"]
    broken["vision_model.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(convert_clip.CheckpointError, match=r"layers\.1\.mlp\.fc2\.bias.*\n.*vision_model\.extra"):
        convert_clip.convert_state_dict(broken, "test")
    bad_ids = dict(sd, **{"vision_model.embeddings.position_ids": np.arange(17)[::-1].copy()[None]})
    with pytest.raises(convert_clip.CheckpointError, match="position_ids"):
        convert_clip.convert_state_dict(bad_ids, "test")


@pytest.mark.parametrize("n_in,n_out", [(256, 224), (32, 224), (7, 5), (5, 13)])
def test_bicubic_resize_matches_torch_interpolate(n_in, n_out):
    x = np.random.default_rng(n_in).standard_normal((2, n_in, n_in + 3, 3)).astype(np.float32)
    want = torch.nn.functional.interpolate(
        torch.from_numpy(x).permute(0, 3, 1, 2), size=(n_out, n_out + 1), mode="bicubic", align_corners=False
    ).permute(0, 2, 3, 1).numpy()
    got = np.asarray(clip.resize_bicubic(x, n_out, n_out + 1))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_preprocess_is_the_official_transform():
    x = np.random.default_rng(1).uniform(-1.2, 1.2, (1, 256, 256, 3)).astype(np.float32)
    t = torch.from_numpy(x).permute(0, 3, 1, 2) * 0.5 + 0.5
    t = torch.nn.functional.interpolate(t, size=(224, 224), mode="bicubic", align_corners=False)
    t = (t - torch.tensor(clip.CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(clip.CLIP_STD).view(1, 3, 1, 1)
    np.testing.assert_allclose(np.asarray(clip.clip_preprocess(x)), t.permute(0, 2, 3, 1).numpy(), atol=5e-5, rtol=0)


@pytest.mark.slow
def test_vit_b32_matches_transformers(tmp_path):
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=224, patch_size=32)
    config, tmodel = _torch_clip(vision, 512)
    sd = {k: v.numpy() for k, v in tmodel.state_dict().items()}
    converted = convert_clip.convert_state_dict(sd, "test")
    model = clip.vit_b32()
    assert convert_clip.infer_model(sd, "test") == model
    x = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
    want = _features(tmodel, x)
    got = np.asarray(jax.jit(model.apply)({"params": converted.params}, x))
    np.testing.assert_allclose(got, want, atol=5e-4 * np.abs(want).max(), rtol=0)
    json.dumps(converted.architecture)
