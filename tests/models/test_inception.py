"""FID Inception-v3 (pytorch-fid's `FIDInceptionV3`) vs an independent PyTorch model (docs/reference.md §6.1).

The PyTorch side (tests/torch_reference/fid_inception.py) gets random weights and random BatchNorm
running statistics, is saved as a `.pth` and goes through `convert.convert_file`, so the kind
detection and key mapping are exercised too. Tolerance: float32, max |JAX - torch| below 1e-4 of the
compared array's max |value| (measured on this test's inputs: pool3 5.7e-7, logits 8.3e-7, taps
1e-7 at Conv2d_1a_3x3 growing to 2.9e-6 at Mixed_7c, all relative to the max). A wrong padding, pool,
concatenation order or BatchNorm mapping moves them by far more than that.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax import convert  # noqa: E402
from scenimefy_jax.convert import inception as convert_inception  # noqa: E402
from scenimefy_jax.models import inception  # noqa: E402
from tests.torch_reference import fid_inception as tref  # noqa: E402

TOLERANCE = 1e-4
TAPS = ("Conv2d_1a_3x3", "Conv2d_4a_3x3", "maxpool2", "Mixed_5d", "Mixed_6a", "Mixed_6e", "Mixed_7a", "Mixed_7b",
        "Mixed_7c")
# At 299x299 (docs/reference.md §6.1): the spatial side and channels of each tapped block output.
TAP_SHAPES = {"Conv2d_1a_3x3": (149, 32), "Conv2d_4a_3x3": (71, 192), "maxpool2": (35, 192), "Mixed_5d": (35, 288),
              "Mixed_6a": (17, 768), "Mixed_6e": (17, 768), "Mixed_7a": (8, 1280), "Mixed_7b": (8, 2048),
              "Mixed_7c": (8, 2048)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(eval-mode torch model, params converted from its saved state dict)."""
    model = tref.randomize_(tref.FIDInceptionV3(), seed=3)
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(model.state_dict(), path)
    converted = convert.convert_file(path)
    assert converted.kind == "fid_inception"
    assert converted.architecture == {"model": "FIDInceptionV3"}
    return model, converted.params


def _torch(model, x, **kwargs):
    with torch.no_grad():
        return model(torch.from_numpy(x).permute(0, 3, 1, 2), **kwargs)


def _close(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert got.dtype == np.float32, what
    scale = float(np.abs(want).max())
    assert scale > 0.1, what  # random statistics keep activations O(1): nothing vanished
    err = float(np.abs(got - want).max())
    assert err <= TOLERANCE * scale, f"{what}: max |diff| {err:.3g} > {TOLERANCE} x {scale:.3g}"


def test_pool3_logits_and_taps_match_pytorch_at_299(reference):
    model, params = reference
    x = np.random.default_rng(0).uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)
    want_pool3, want_logits, want_taps = _torch(model, x, taps=TAPS, logits=True)
    net = inception.FIDInceptionV3(logits=True)
    pool3, logits, taps = jax.jit(lambda p, x: net.apply({"params": p}, x, taps=TAPS))(params, x)
    assert pool3.shape == (2, inception.NUM_FEATURES) and logits.shape == (2, inception.NUM_CLASSES)
    assert sorted(taps) == sorted(TAPS)  # jit returns dicts with sorted keys
    _close(pool3, want_pool3.numpy(), "pool3")
    _close(logits, want_logits.numpy(), "logits")
    for name in TAPS:
        side, channels = TAP_SHAPES[name]
        assert taps[name].shape == (2, side, side, channels), name
        _close(taps[name], want_taps[name].permute(0, 2, 3, 1).numpy(), name)
    # the two images differ, so a batch mix-up would show
    assert np.abs(np.asarray(pool3[0]) - np.asarray(pool3[1])).max() > 1e-2


def test_other_input_sizes_match_pytorch(reference):
    """150x100 (not square, not 299): every valid-padded stride and the exclusive average pools see
    other border patterns; pool3 still agrees (measured 9.3e-7 of max |pool3|)."""
    model, params = reference
    x = np.random.default_rng(1).uniform(-1, 1, (1, 150, 100, 3)).astype(np.float32)
    want = _torch(model, x).numpy()
    got = jax.jit(lambda p, x: inception.FIDInceptionV3().apply({"params": p}, x))(params, x)
    _close(got, want, "pool3 at 150x100")


def test_bfloat16_returns_float32_close_to_pytorch(reference):
    """At the smallest input (75x75: Mixed_7a..7c are 1x1) bfloat16 convolutions stay within 3e-2 of
    max |pool3| of float32 torch (measured 1.3e-2 for pool3, 1.5e-2 for logits), and every returned
    array is float32."""
    model, params = reference
    x = np.random.default_rng(2).uniform(-1, 1, (1, 75, 75, 3)).astype(np.float32)
    want_pool3, want_logits = _torch(model, x, logits=True)
    net = inception.FIDInceptionV3(dtype=jnp.bfloat16, logits=True)
    pool3, logits, taps = jax.jit(lambda p, x: net.apply({"params": p}, x, taps=("Mixed_7c",)))(params, x)
    assert pool3.dtype == logits.dtype == taps["Mixed_7c"].dtype == jnp.float32
    assert taps["Mixed_7c"].shape == (1, 1, 1, 2048)
    for got, want in ((pool3, want_pool3.numpy()), (logits, want_logits.numpy())):
        assert float(np.abs(np.asarray(got) - want).max()) <= 3e-2 * float(np.abs(want).max())


def test_too_small_inputs_and_unknown_taps_are_refused():
    net = inception.FIDInceptionV3()
    with pytest.raises(ValueError, match="75"):
        jax.eval_shape(lambda x: net.init(jax.random.key(0), x), jnp.zeros((1, 74, 80, 3)))
    with pytest.raises(ValueError, match="Mixed_8a"):
        jax.eval_shape(lambda x: net.init(jax.random.key(0), x, taps=("Mixed_8a",)), jnp.zeros((1, 75, 75, 3)))


def test_architecture_size_is_the_published_one():
    shapes = inception.param_shapes()
    learned = {k: v for k, v in shapes.items() if "running_" not in k}
    assert sum(int(np.prod(s)) for s in learned.values()) == 23_850_960  # 23.85 M including fc
    assert len(inception.conv_specs()) == 94
    assert sum(k.endswith(".conv.weight") for k in shapes) == 94
    assert shapes["fc.weight"] == (1008, 2048) and shapes["fc.bias"] == (1008,)
    torch_model = tref.FIDInceptionV3()
    assert sum(p.numel() for p in torch_model.parameters()) == 23_850_960
    assert sum(isinstance(m, torch.nn.Conv2d) for m in torch_model.modules()) == 94
    torch_shapes = {k: tuple(v.shape) for k, v in torch_model.state_dict().items()
                    if not k.endswith("num_batches_tracked")}
    assert torch_shapes == shapes


def test_random_params_have_the_converted_layout():
    """random_params == the converter's output structure == what `init` creates (with logits)."""
    random = inception.random_params(seed=0)
    zeros = {k: np.zeros(s, np.float32) for k, s in inception.param_shapes().items()}
    converted = convert_inception.convert_state_dict(zeros).params

    def layout(tree):
        return jax.tree_util.tree_map(lambda a: (tuple(np.shape(a)), str(np.asarray(a).dtype)), tree)

    assert layout(random) == layout(converted)
    initialised = jax.eval_shape(
        lambda x: inception.FIDInceptionV3(logits=True).init(jax.random.key(0), x)["params"],
        jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32),
    )
    assert jax.tree_util.tree_map(lambda a: (a.shape, str(a.dtype)), initialised) == layout(random)
    assert all(np.all(v > 0) for k, v in jax.tree_util.tree_leaves_with_path(random)
               if jax.tree_util.keystr(k).endswith("['var']"))
