"""`MSDeformAttnPixelDecoder` vs. transformers' `Mask2FormerPixelDecoder` (random weights, docs/reference.md
§5.2), the parameter-name contract with `scenimefy_jax.convert.mask2former_keys` (§5.3), and the encoder's
reference points vs. transformers'.

Tolerances (float32 on both sides): `mask_features` and the three multi-scale maps agree to
`1e-4 * max|reference|` (measured <= 7.4e-7 at the small config, <= 1.4e-5 at the Swin-B/ADE sizes);
in float64 on both sides they agree to 1e-11 (measured ~1e-14 at the Swin-B/ADE sizes too), so the float32
residue is rounding; bfloat16 compute stays within 2.5e-2 * max|float32 output| (measured ~8e-3).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from scenimefy_jax.convert import mask2former_keys  # noqa: E402
from scenimefy_jax.models.mask2former import pixel_decoder  # noqa: E402

PREFIX = "model.pixel_level_module.decoder."
SMALL = dict(feature_size=64, mask_feature_size=64, hidden_dim=64, encoder_layers=2, encoder_feedforward_dim=128,
             num_attention_heads=4, decoder_layers=2, dim_feedforward=128, num_queries=8)
SWIN_B_ADE = dict(feature_size=256, mask_feature_size=256, hidden_dim=256, encoder_layers=6,
                  encoder_feedforward_dim=1024, num_attention_heads=8, decoder_layers=2, dim_feedforward=256,
                  num_queries=8)


def _torch_decoder(embed_dim, decoder_kwargs, seed=0):
    """The pixel decoder of a full `Mask2FormerForUniversalSegmentation` (a one-block-per-stage Swin: the
    decoder only sees its channel counts), with every parameter that initialises to a constant randomised."""
    torch.manual_seed(seed)
    swin = transformers.SwinConfig(embed_dim=embed_dim, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=4,
                                   out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.Mask2FormerConfig(backbone_config=swin, **decoder_kwargs)
    model = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    decoder = model.model.pixel_level_module.decoder
    with torch.no_grad():
        for name, p in decoder.named_parameters():
            if (name.endswith("bias") or p.ndim == 1 or name == "level_embed" or "sampling_offsets" in name
                    or "attention_weights" in name):
                p.add_(0.1 * torch.randn_like(p))
    return config, decoder, model.model.pixel_level_module.encoder.channels


def _features(channels, sizes, batch=1, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, h, w, c)).astype(np.float32) for (h, w), c in zip(sizes, channels)]


def _convert(config, decoder, features):
    model = pixel_decoder.pixel_decoder_from_hf_config(config.to_dict())
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), features)["params"]
    sd = {k: v.detach().numpy() for k, v in decoder.state_dict().items()}
    return model, shapes, mask2former_keys.params_from_state_dict(sd, shapes, source="test")


def _compare(decoder, model, params, features):
    with torch.no_grad():
        ref = decoder([torch.from_numpy(f).permute(0, 3, 1, 2) for f in features])
    mask_features, multi_scale = jax.jit(model.apply)({"params": params}, features)
    wants = [ref.mask_features, *ref.multi_scale_features]
    gots = [mask_features, *multi_scale]
    assert len(gots) == 4
    errors = []
    for got, want in zip(gots, wants):
        want = want.permute(0, 2, 3, 1).numpy()
        assert got.shape == want.shape
        errors.append(float(np.abs(np.asarray(got) - want).max() / np.abs(want).max()))
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * np.abs(want).max(), rtol=0)
    return errors


def test_parameter_names_are_the_transformers_keys():
    config, decoder, channels = _torch_decoder(16, SMALL)
    features = _features(channels, [(16, 24), (8, 12), (4, 6), (2, 3)])
    _, shapes, _ = _convert(config, decoder, features)
    want = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    assert mask2former_keys.expected_keys(shapes) == want
    full_model_keys = {PREFIX + k for k in want}
    assert mask2former_keys.expected_keys(shapes, PREFIX).keys() == full_model_keys


@pytest.mark.parametrize(
    "sizes, batch",
    [
        ([(16, 16), (8, 8), (4, 4), (2, 2)], 1),  # 64x64 image
        ([(16, 24), (8, 12), (4, 6), (2, 3)], 2),  # 64x96 images: non-square, 2x3 at stride 32
        ([(11, 14), (6, 7), (3, 4), (2, 2)], 1),  # ceil-divided odd sizes: res3 -> res2 upsampling is not 2x
    ],
    ids=["square", "non_square_batch2", "odd"],
)
def test_small_config_matches_transformers(sizes, batch):
    config, decoder, channels = _torch_decoder(16, SMALL)
    features = _features(channels, sizes, batch)
    model, _, params = _convert(config, decoder, features)
    assert model.num_heads == config.num_attention_heads
    _compare(decoder, model, params, features)


def test_float64_matches_transformers_to_rounding(monkeypatch):
    """In float64 on both sides the float32 residue above disappears: the port is exact, not just close.

    The shared helpers hand the decoder float32 constants; the interpolation matrices of an exact 2x
    upsampling are exact in float32, and the position encoding is swapped for torch's float64 one.
    """
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerSinePositionEmbedding

    torch_pos = Mask2FormerSinePositionEmbedding(num_position_features=SMALL["feature_size"] // 2, normalize=True)
    monkeypatch.setattr(pixel_decoder, "sine_position_encoding",
                        lambda h, w, f: torch_pos((1, 2 * f, h, w), "cpu", torch.float64)[0].permute(1, 2, 0).numpy())
    config, decoder, channels = _torch_decoder(16, SMALL)
    features = _features(channels, [(16, 24), (8, 12), (4, 6), (2, 3)], batch=2)
    model, _, params = _convert(config, decoder, features)  # float32 weights: exact in float64 too
    decoder = decoder.double()
    with torch.no_grad():
        ref = decoder([torch.from_numpy(f).double().permute(0, 3, 1, 2) for f in features])
    with jax.enable_x64(True):
        params64, features64 = jax.tree.map(lambda x: np.asarray(x, np.float64), (params, features))
        mask_features, multi_scale = jax.jit(model.clone(dtype=jnp.float64).apply)({"params": params64}, features64)
        for got, want in zip([mask_features, *multi_scale], [ref.mask_features, *ref.multi_scale_features]):
            want = want.permute(0, 2, 3, 1).numpy()
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(got), want, atol=1e-11 * np.abs(want).max(), rtol=0)


def test_bfloat16_compute_is_close_to_float32():
    config, decoder, channels = _torch_decoder(16, SMALL)
    features = _features(channels, [(16, 24), (8, 12), (4, 6), (2, 3)])
    model, _, params = _convert(config, decoder, features)
    want = jax.jit(model.apply)({"params": params}, features)
    bf16 = model.clone(dtype=jnp.bfloat16)
    got = jax.jit(bf16.apply)({"params": params}, features)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.dtype == jnp.bfloat16 and w.dtype == jnp.float32
        g, w = np.asarray(g, np.float32), np.asarray(w)
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g, w, atol=2.5e-2 * np.abs(w).max(), rtol=0)
    init_params = jax.eval_shape(bf16.init, jax.random.PRNGKey(0), features)["params"]
    assert {x.dtype for x in jax.tree.leaves(init_params)} == {jnp.dtype(jnp.float32)}


def test_reference_points_match_transformers():
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerPixelDecoderEncoderOnly

    shapes = [(2, 3), (4, 6), (8, 12)]
    want = Mask2FormerPixelDecoderEncoderOnly.get_reference_points(shapes, torch.ones(1, 3, 2), "cpu")
    got = np.asarray(pixel_decoder.encoder_reference_points(shapes))
    np.testing.assert_allclose(np.broadcast_to(got[None, :, None], want.shape), want.numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("image_size", [(256, 256), (256, 320)])
def test_swin_b_ade_sizes_match_transformers(image_size):
    config, decoder, channels = _torch_decoder(128, SWIN_B_ADE)
    assert list(channels) == [128, 256, 512, 1024]
    h, w = image_size
    features = _features(channels, [(h // s, w // s) for s in (4, 8, 16, 32)])
    model, _, params = _convert(config, decoder, features)
    assert (model.feature_size, model.encoder_layers, model.num_heads) == (256, 6, 8)
    errors = _compare(decoder, model, params, features)
    print(f"{image_size}: max error / scale (mask_features, stride 32, 16, 8) = {errors}")

