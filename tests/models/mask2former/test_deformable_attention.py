"""Multi-scale deformable sampling vs. `torch.nn.functional.grid_sample` (docs/reference.md §5.3), and the
`MSDeformAttn` module vs. transformers' `Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention`.

The reference is computed in float64 torch from the same float32 inputs; the JAX side is float32.
Tolerances: values and gradients to `1e-5 * max|reference|` (measured <= 1.9e-7); the module to
`1e-5 * max|reference|` against float32 torch (measured 4.4e-7).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax.models.mask2former.deformable_attention import MSDeformAttn, ms_deform_attn_sample  # noqa: E402

# Non-square levels of different sizes; the power-of-two axes let exact pixel centres and edges be
# written exactly in binary, so both sides land on the same side of every bilinear kink.
SHAPES = ((4, 8), (3, 5), (2, 4))
B, Q, HEADS, HEAD_DIM, POINTS = 2, 11, 3, 4, 5


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    seq = sum(h * w for h, w in SHAPES)
    value = rng.standard_normal((B, seq, HEADS, HEAD_DIM)).astype(np.float32)
    loc = rng.uniform(-0.3, 1.3, (B, Q, HEADS, len(SHAPES), POINTS, 2)).astype(np.float32)
    for lvl, (h, w) in enumerate(SHAPES):
        for axis, size in ((0, w), (1, h)):  # loc[..., 0] is x (width), loc[..., 1] is y (height)
            exact = [0.0, 1.0, -0.5, 1.5]  # the map's edges and points far outside it
            if size & (size - 1) == 0:  # pixel centres 0 and size-1, pixel -1 and size (just outside)
                exact += [0.5 / size, 1 - 0.5 / size, -0.5 / size, 1 + 0.5 / size, 1.5 / size]
            exact = np.asarray(exact, np.float32)
            loc[0, : len(exact), 0, lvl, 0, axis] = exact
            loc[1, : len(exact), 1, lvl, 1, axis] = exact[::-1]
    weights = rng.uniform(0, 1, (B, Q, HEADS, len(SHAPES), POINTS)).astype(np.float32)
    return value, loc, weights


def _torch_reference(value, loc, weights):
    """Per level: grid_sample over [B*heads, D, H, W], weighted sum over points, summed over levels."""
    b, _, heads, d = value.shape
    q = loc.shape[1]
    out, start = 0, 0
    for lvl, (h, w) in enumerate(SHAPES):
        v = value[:, start : start + h * w].permute(0, 2, 3, 1).reshape(b * heads, d, h, w)
        grid = (2 * loc[:, :, :, lvl] - 1).permute(0, 2, 1, 3, 4).reshape(b * heads, q, -1, 2)
        sampled = torch.nn.functional.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        a = weights[:, :, :, lvl].permute(0, 2, 1, 3).reshape(b * heads, 1, q, -1)
        out = out + (sampled * a).sum(-1)  # [B*heads, D, Q]
        start += h * w
    return out.reshape(b, heads * d, q).transpose(1, 2)


def test_sampling_matches_grid_sample_value_and_gradients():
    value, loc, weights = _inputs()
    cotangent = np.random.default_rng(1).standard_normal((B, Q, HEADS * HEAD_DIM))

    tv, tl, tw = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (value, loc, weights))
    want = _torch_reference(tv, tl, tw)
    (want * torch.from_numpy(cotangent)).sum().backward()

    def loss(v, l, w):
        out = ms_deform_attn_sample(v, SHAPES, l, w)
        return jnp.sum(out * cotangent.astype(np.float32)), out

    grads, got = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(value, loc, weights)
    pairs = [(got, want), (grads[0], tv.grad), (grads[1], tl.grad), (grads[2], tw.grad)]
    for name, (g, w) in zip(["value", "d/dvalue", "d/dlocations", "d/dweights"], pairs):
        w = w.detach().numpy()
        np.testing.assert_allclose(np.asarray(g), w, atol=1e-5 * np.abs(w).max(), rtol=0, err_msg=name)
    # The gradient w.r.t. the locations alone compiles to different fusions (an earlier formulation of the
    # sampler crashed XLA:CPU's YNN fusion pass in exactly this case); it must agree too.
    loc_only = jax.jit(jax.grad(lambda l: loss(value, l, weights)[0]))(loc)
    w = tl.grad.numpy()
    np.testing.assert_allclose(np.asarray(loc_only), w, atol=1e-5 * np.abs(w).max(), rtol=0)
    assert (loc < 0).any() and (loc > 1).any()


def test_out_of_range_corners_read_exact_zeros():
    """A non-finite value on the border of the map must not leak into samples that fall outside it."""
    h, w = 3, 5
    value = np.ones((1, h * w, 1, 2), np.float32)
    grid = value.reshape(h, w, 2)
    grid[0, :], grid[-1, :], grid[:, 0], grid[:, -1] = np.inf, np.nan, np.inf, np.nan
    value = grid.reshape(1, h * w, 1, 2)
    # Locations entirely outside the map (every corner out of range), and one absurdly far away.
    loc = np.array([-0.5, 1.5, -1e9, 1e9], np.float32)
    loc = np.stack(np.meshgrid(loc, loc, indexing="ij"), -1).reshape(1, -1, 1, 1, 1, 2)
    weights = np.ones(loc.shape[:-1], np.float32)
    out = np.asarray(ms_deform_attn_sample(value, ((h, w),), loc, weights))
    np.testing.assert_array_equal(out, 0.0)


def test_rejects_inconsistent_shapes():
    value, loc, weights = _inputs()
    with pytest.raises(ValueError, match="sequence length"):
        ms_deform_attn_sample(value, SHAPES[:2], loc, weights)


def test_module_matches_transformers():
    pytest.importorskip("transformers")
    from transformers.models.mask2former import modeling_mask2former as hf

    embed, heads, levels, points = 32, 4, 3, 4
    shapes = ((2, 3), (4, 5), (7, 6))
    torch.manual_seed(0)
    tmod = hf.Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention(embed, heads, levels, points).eval()
    with torch.no_grad():
        for p in tmod.parameters():  # includes the offsets' bias grid; weights get a real spread
            p.add_(0.1 * torch.randn_like(p))
    rng = np.random.default_rng(0)
    seq = sum(h * w for h, w in shapes)
    hidden = rng.standard_normal((2, seq, embed)).astype(np.float32)
    pos = rng.standard_normal((2, seq, embed)).astype(np.float32)
    ref = rng.uniform(0, 1, (2, seq, levels, 2)).astype(np.float32)
    with torch.no_grad():
        want, _ = tmod(
            hidden_states=torch.from_numpy(hidden),
            encoder_hidden_states=torch.from_numpy(hidden),
            position_embeddings=torch.from_numpy(pos),
            reference_points=torch.from_numpy(ref),
            spatial_shapes_list=list(shapes),
        )
    want = want.numpy()

    module = MSDeformAttn(embed, heads, levels, points)
    linear = lambda m: {"kernel": m.weight.detach().numpy().T, "bias": m.bias.detach().numpy()}  # noqa: E731
    names = ("sampling_offsets", "attention_weights", "value_proj", "output_proj")
    params = {name: linear(getattr(tmod, name)) for name in names}
    init = functools.partial(module.init, spatial_shapes=shapes)
    shapes_init = jax.eval_shape(init, jax.random.PRNGKey(0), hidden + pos, hidden, ref)["params"]
    assert jax.tree.map(lambda x: x.shape, shapes_init) == jax.tree.map(np.shape, params)
    got = np.asarray(jax.jit(module.apply, static_argnums=4)({"params": params}, hidden + pos, hidden, ref, shapes))
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)


def test_module_init_is_deformable_detr():
    """Fresh parameters: zero offset kernel with the angular bias grid, uniform attention weights."""
    module = MSDeformAttn(16, 4, 3, 2)
    x = jnp.zeros((1, 6, 16))
    params = module.init(jax.random.PRNGKey(0), x, x, jnp.full((1, 6, 3, 2), 0.5), ((1, 2), (1, 2), (2, 1)))["params"]
    np.testing.assert_array_equal(params["sampling_offsets"]["kernel"], 0.0)
    np.testing.assert_array_equal(params["attention_weights"]["kernel"], 0.0)
    grid = np.asarray(params["sampling_offsets"]["bias"]).reshape(4, 3, 2, 2)
    np.testing.assert_allclose(grid[:, 0, 0], [[1, 0], [0, 1], [-1, 0], [0, -1]], atol=1e-6)
    np.testing.assert_allclose(grid[:, 2, 1], 2 * grid[:, 0, 0])
