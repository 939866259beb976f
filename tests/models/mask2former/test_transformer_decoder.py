"""The masked-attention transformer decoder against transformers' PyTorch `Mask2FormerTransformerModule`.

Random weights (biases, norms, embeddings randomised too) and random pixel-decoder outputs; the
converted JAX module must give every layer's LayerNorm-ed queries and mask logits, and the class
logits, within 1e-4 of their scale (float32; the attention masks are hard thresholds, so the inputs
are scaled such that no mask logit sits within rounding of the threshold). Also: the torch-exact
bilinear resize and the sine position encoding against their torch counterparts.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from scenimefy_jax.convert import mask2former_keys  # noqa: E402
from scenimefy_jax.models.mask2former.position_encoding import sine_position_encoding  # noqa: E402
from scenimefy_jax.models.mask2former.transformer_decoder import TransformerModule, attention_mask  # noqa: E402
from scenimefy_jax.models.resize import resize_bilinear  # noqa: E402

HIDDEN, QUERIES, LAYERS, HEADS, FFN = 32, 6, 4, 4, 64


def _torch_model(seed=0):
    torch.manual_seed(seed)
    backbone = transformers.SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2,
                                       out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.Mask2FormerConfig(
        backbone_config=backbone, feature_size=HIDDEN, mask_feature_size=HIDDEN, hidden_dim=HIDDEN,
        encoder_layers=1, encoder_feedforward_dim=32, decoder_layers=LAYERS + 1, num_attention_heads=HEADS,
        dim_feedforward=FFN, num_queries=QUERIES, num_labels=5)
    model = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "embed" in name or "queries" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


def _run_torch(model, features, mask_features):
    with torch.no_grad():
        out = model.model.transformer_module(
            multi_scale_features=[torch.from_numpy(f).permute(0, 3, 1, 2) for f in features],
            mask_features=torch.from_numpy(mask_features).permute(0, 3, 1, 2), output_hidden_states=True)
        states = [s.transpose(0, 1) for s in out.intermediate_hidden_states]
        classes = [model.class_predictor(s) for s in states]
    return ([s.numpy() for s in states], [m.numpy() for m in out.masks_queries_logits], [c.numpy() for c in classes])


@pytest.mark.parametrize("size,uniform", [((64, 64), False), ((64, 96), False), ((64, 96), True)])
def test_transformer_module_matches_transformers(size, uniform):
    """`uniform`: near-constant mask features, so a query's mask logits share one sign everywhere and
    whole attention rows are masked: the fully-masked-row reset is exercised."""
    model = _torch_model()
    h, w = size
    rng = np.random.default_rng(1)
    features = [rng.standard_normal((2, h // s, w // s, HIDDEN)).astype(np.float32) for s in (32, 16, 8)]
    mask_features = rng.standard_normal((2, h // 4, w // 4, HIDDEN)).astype(np.float32)
    if uniform:
        mask_features = 1.0 + 0.05 * mask_features
    want_states, want_masks, want_classes = _run_torch(model, features, mask_features)

    module = TransformerModule(in_features=HIDDEN, hidden_dim=HIDDEN, mask_dim=HIDDEN, num_queries=QUERIES,
                               num_layers=LAYERS, heads=HEADS, ffn_dim=FFN)
    shapes = jax.eval_shape(module.init, jax.random.key(0), features, mask_features)["params"]
    sd = {k[len("model.transformer_module."):]: v.numpy() for k, v in model.state_dict().items()
          if k.startswith("model.transformer_module.")}
    assert mask2former_keys.expected_keys(shapes) == {k: tuple(v.shape) for k, v in sd.items()}
    params = mask2former_keys.params_from_state_dict(sd, shapes)
    states, masks = jax.jit(module.apply)({"params": params}, features, mask_features)
    assert states.shape[0] == LAYERS + 1
    # At least one attention row must actually be masked, or the test would not exercise masking.
    sizes = [(h // 32, w // 32), (h // 16, w // 16), (h // 8, w // 8)]
    masked = [np.asarray(attention_mask(jnp.asarray(want_masks[i]), sizes[i % 3])) for i in range(LAYERS)]
    assert any(m.any() for m in masked)
    if uniform:  # some row was fully masked before the reset (the reset leaves it all False)
        raw = [np.asarray(resize_bilinear(jnp.asarray(want_masks[i]), sizes[i % 3], channels_last=False)) < 0
               for i in range(LAYERS)]
        assert any(r.reshape(*r.shape[:2], -1).all(-1).any() for r in raw)
    for i in range(LAYERS + 1):
        for got, want in ((states[i], want_states[i]), (masks[i], want_masks[i])):
            np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-4 * np.abs(want).max())
    class_kernel = mask2former_keys.to_flax("kernel", model.class_predictor.weight.detach().numpy())
    classes = np.asarray(states[-1]) @ class_kernel + model.class_predictor.bias.detach().numpy()
    np.testing.assert_allclose(classes, want_classes[-1], rtol=0, atol=1e-4 * np.abs(want_classes[-1]).max())


@pytest.mark.parametrize("src,dst", [((16, 16), (4, 4)), ((16, 24), (2, 3)), ((5, 7), (20, 28)), ((6, 6), (9, 4))])
def test_resize_bilinear_matches_torch_interpolate(src, dst):
    x = np.random.default_rng(0).standard_normal((2, 3, *src)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=dst, mode="bilinear", align_corners=False).numpy()
    got = resize_bilinear(jnp.asarray(x), dst, channels_last=False)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-5)
    got_nhwc = resize_bilinear(jnp.asarray(x.transpose(0, 2, 3, 1)), dst)
    np.testing.assert_allclose(np.asarray(got_nhwc), want.transpose(0, 2, 3, 1), rtol=0, atol=1e-5)


def test_sine_position_encoding_matches_transformers():
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerSinePositionEmbedding

    ref = Mask2FormerSinePositionEmbedding(num_position_features=16, normalize=True)
    want = ref((1, 32, 5, 7), "cpu", torch.float32).numpy()[0].transpose(1, 2, 0)
    np.testing.assert_allclose(sine_position_encoding(5, 7, 16), want, rtol=0, atol=2e-6)
