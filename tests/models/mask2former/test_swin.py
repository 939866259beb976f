"""Swin backbone parity with transformers' `SwinBackbone` as Mask2Former builds and calls it (random weights).

The reference is `Mask2FormerForUniversalSegmentation(config).model.pixel_level_module.encoder`, which
runs with `always_partition=True` (detectron2 semantics, docs/reference.md §5.2). Every parameter is
re-randomised (weights ~ N(0, 1/fan_in), biases and LayerNorms perturbed by 0.1 N(0, 1), relative position
tables ~ N(0, 1)) so that attention is far from uniform and a wrong bias index, window order or mask shows.

Tolerance (float32): each of the four stage outputs agrees to `1e-4 * max|ref|` (measured: <= 1e-6 of
max|ref| for the tiny configs, <= 1.4e-6 for the full Swin-B at 256x256 and 256x320).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from scenimefy_jax.convert import mask2former_keys  # noqa: E402
from scenimefy_jax.models.mask2former import swin  # noqa: E402

TINY = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))  # a shifted block in every stage
SWIN_B = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12)


@functools.lru_cache(maxsize=None)
def _reference(embed_dim, depths, num_heads, window_size, seed=0):
    """The HF backbone inside a Mask2Former model, with every parameter randomised."""
    torch.manual_seed(seed)
    backbone_config = transformers.SwinConfig(
        embed_dim=embed_dim, depths=list(depths), num_heads=list(num_heads), window_size=window_size,
        out_features=["stage1", "stage2", "stage3", "stage4"])
    model = transformers.Mask2FormerForUniversalSegmentation(
        transformers.Mask2FormerConfig(backbone_config=backbone_config)).eval()
    encoder = model.model.pixel_level_module.encoder
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.copy_(torch.randn_like(p))
            elif p.ndim >= 2:
                p.copy_(torch.randn_like(p) / np.sqrt(p[0].numel()))
            else:  # biases and LayerNorm weights
                p.add_(0.1 * torch.randn_like(p))
    return encoder


def _state_dict(encoder):
    return {k: v.numpy() for k, v in encoder.state_dict().items() if not k.startswith("swin.layernorm.")}


def _flax(encoder, **kwargs):
    config = encoder.config
    model = swin.SwinBackbone(embed_dim=config.embed_dim, depths=tuple(config.depths),
                              num_heads=tuple(config.num_heads), window_size=config.window_size,
                              mlp_ratio=config.mlp_ratio, patch_size=config.patch_size,
                              layer_norm_eps=config.layer_norm_eps, **kwargs)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    return model, shapes


def _compare(encoder, x, rel_tol):
    with torch.no_grad():
        want = [f.permute(0, 2, 3, 1).numpy() for f in encoder(torch.from_numpy(x).permute(0, 3, 1, 2)).feature_maps]
    model, shapes = _flax(encoder)
    params = mask2former_keys.params_from_state_dict(_state_dict(encoder), shapes)
    got = jax.jit(model.apply)({"params": params}, x)
    assert len(got) == 4
    errors = []
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == jnp.float32
        scale = np.abs(w).max()
        errors.append(float(np.abs(np.asarray(g) - w).max() / scale))
        np.testing.assert_allclose(np.asarray(g), w, atol=rel_tol * scale, rtol=0)
    print("max abs error / max |ref| per stage:", ["%.1e" % e for e in errors])
    return got


@pytest.mark.parametrize("window", [1, 3, 4, 7, 12])
def test_relative_position_index_matches_torch(window):
    got = swin.relative_position_index(window)
    # independent formula: explicit loops over (query, key) token pairs
    tokens = [(y, x) for y in range(window) for x in range(window)]
    loops = np.array([[(yq - yk + window - 1) * (2 * window - 1) + (xq - xk + window - 1) for yk, xk in tokens]
                      for yq, xq in tokens])
    np.testing.assert_array_equal(got, loops)
    # the buffer transformers computes (non-persistent in 5.x, so not in the state dict)
    bias = transformers.models.swin.modeling_swin.SwinRelativePositionBias(2, (window, window))
    np.testing.assert_array_equal(got, bias.relative_position_index.view(window**2, window**2).numpy())


def test_parameter_names_are_the_hf_keys():
    encoder = _reference(**TINY, window_size=4)
    hf = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert {"swin.layernorm.weight", "swin.layernorm.bias"} <= set(hf)
    hf = {k: s for k, s in hf.items() if not k.startswith("swin.layernorm.")}
    _, shapes = _flax(encoder)
    assert mask2former_keys.expected_keys(shapes) == hf


@pytest.mark.parametrize("window,shape", [
    # stages 20, 10, 5, 3: window padding at 10 -> 12 and 5 -> 8; stage 4 (3x3) smaller than the window
    (4, (1, 80, 80)),
    # 15x23 -> 8x12 -> 4x6 -> 2x3: odd sizes at the first merge, padding to the window at every stage
    (4, (2, 60, 92)),
    # input padded to the patch (61x90 -> 64x92), window 3 (shift 1): 16x23 -> 8x12 -> 4x6 -> 2x3
    (3, (1, 61, 90)),
])
def test_matches_transformers(window, shape):
    x = np.random.default_rng(sum(shape)).standard_normal((*shape, 3)).astype(np.float32)
    got = _compare(_reference(**TINY, window_size=window), x, rel_tol=1e-4)
    strides = (4, 8, 16, 32)
    assert [g.shape[1:3] for g in got] == [(-(-shape[1] // s), -(-shape[2] // s)) for s in strides]


def test_bfloat16_is_close_to_float32():
    encoder = _reference(**TINY, window_size=4)
    x = np.random.default_rng(1).standard_normal((1, 64, 64, 3)).astype(np.float32)
    model32, shapes = _flax(encoder)
    model16, _ = _flax(encoder, dtype=jnp.bfloat16)
    params = {"params": mask2former_keys.params_from_state_dict(_state_dict(encoder), shapes)}
    for a, b in zip(jax.jit(model32.apply)(params, x), jax.jit(model16.apply)(params, x)):
        assert b.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=0.1 * np.abs(np.asarray(a)).max(), rtol=0)


# full Swin-B (24 blocks) at two sizes: ~10 s on 2 cores, so in the default suite
@pytest.mark.parametrize("height,width", [(256, 256), (256, 320)])
def test_swin_b_matches_transformers(height, width):
    x = np.random.default_rng(width).standard_normal((1, height, width, 3)).astype(np.float32)
    _compare(_reference(**SWIN_B), x, rel_tol=1e-4)
