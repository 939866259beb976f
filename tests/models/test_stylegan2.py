"""Parity of the Flax StyleGAN2 with the PyTorch reference written from docs/reference.md §3.1-3.2
(same weights).

Weights are random with non-zero noise strengths, biases and modulation offsets (`ref.randomize_`).
Small configs (size 32, style_dim 64, narrow channels) keep the default run fast; the full official size
is checked by parameter count here and by the slow-marked full-size image test.
Tolerance: float32; images (O(1)) agree to 2e-4 absolute, logits to 1e-4 relative to their scale.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax.convert import stylegan2 as conv  # noqa: E402
from scenimefy_jax.models import stylegan2 as sg  # noqa: E402
from tests.torch_reference import stylegan2 as ref  # noqa: E402

SMALL = {4: 32, 8: 32, 16: 16, 32: 16}
STYLE_DIM = 64


def _sd(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _module_params(sd, prefix=("conv",)):
    """A ModulatedConv2d/ToRGB state dict -> Flax params of the same module."""
    flat = {}
    for key, value in sd.items():
        if key.endswith(".kernel") and ("blur" in key or "upsample" in key):
            continue
        parts = tuple(key.split("."))
        path = prefix + tuple("kernel" if p == "weight" else p for p in parts)
        flat[path] = conv.to_flax(path, value)
    return conv._nest(flat)[prefix[0]]


@pytest.fixture(scope="module")
def small_pair():
    torch.manual_seed(0)
    tg = ref.randomize_(ref.Generator(32, STYLE_DIM, 2, channels=SMALL), seed=1).eval()
    model = sg.Generator(size=32, style_dim=STYLE_DIM, n_mlp=2, channels=sg.channels_field(SMALL))
    variables = conv.convert_generator(_sd(tg), model, source="test", name="g_ema")
    return tg, model, variables


@pytest.mark.parametrize("impl", sg.CONV_IMPLS)
@pytest.mark.parametrize("upsample,demodulate,k", [(False, True, 3), (True, True, 3), (False, False, 1)])
def test_modulated_conv(impl, upsample, demodulate, k):
    torch.manual_seed(k + 2 * upsample)
    tm = ref.ModulatedConv2d(8, 6, k, STYLE_DIM, demodulate=demodulate, upsample=upsample)
    ref.randomize_(tm, seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 7, 8)).astype(np.float32)
    w = rng.standard_normal((3, STYLE_DIM)).astype(np.float32)
    with torch.no_grad():
        want = ref.nhwc(tm(ref.nchw(x), torch.from_numpy(w)))
    fm = sg.ModulatedConv2d(6, k, demodulate=demodulate, upsample=upsample, impl=impl)
    params = _module_params({k_: v for k_, v in _sd(tm).items()})
    got = np.asarray(fm.apply({"params": params}, x, w))
    assert got.shape == want.shape == (3, 14 if upsample else 7, 14 if upsample else 7, 6)
    np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max(), rtol=0)


def test_to_rgb_with_upsampled_skip():
    torch.manual_seed(5)
    tm = ref.randomize_(ref.ToRGB(8, STYLE_DIM), seed=5)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 8, 8)).astype(np.float32)
    skip = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    w = rng.standard_normal((2, STYLE_DIM)).astype(np.float32)
    with torch.no_grad():
        want = ref.nhwc(tm(ref.nchw(x), torch.from_numpy(w), ref.nchw(skip)))
    sd = _sd(tm)
    params = {"conv": _module_params({k[5:]: v for k, v in sd.items() if k.startswith("conv.")}), "bias": sd["bias"].reshape(-1)}
    got = np.asarray(sg.ToRGB().apply({"params": params}, x, w, skip))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_generator_fixed_noise_truncation_and_mixing(small_pair):
    tg, model, variables = small_pair
    rng = np.random.default_rng(2)
    z1, z2 = (rng.standard_normal((2, STYLE_DIM)).astype(np.float32) for _ in range(2))
    with torch.no_grad():
        w_avg = tg.style(torch.from_numpy(rng.standard_normal((64, STYLE_DIM)).astype(np.float32))).mean(0, keepdim=True)
        want_plain = tg([torch.from_numpy(z1)], randomize_noise=False)[0].numpy()
        want_trunc = tg([torch.from_numpy(z1)], truncation=0.7, truncation_latent=w_avg, randomize_noise=False)[0].numpy()
        want_mix = tg([torch.from_numpy(z1), torch.from_numpy(z2)], inject_index=3, truncation=0.5,
                      truncation_latent=w_avg, randomize_noise=False)[0].numpy()
        ws = tg.style(torch.from_numpy(z1)).numpy()
    apply = jax.jit(lambda v, *a, **k: model.apply(v, *a, **k), static_argnames=("randomize_noise",))
    got_plain = np.asarray(apply(variables, [z1], randomize_noise=False))
    got_trunc = np.asarray(apply(variables, [z1], truncation=0.7, truncation_latent=w_avg.numpy(), randomize_noise=False))
    got_mix = np.asarray(apply(variables, [z1, z2], inject_index=3, truncation=0.5, truncation_latent=w_avg.numpy(),
                               randomize_noise=False))
    got_w = np.asarray(model.apply(variables, z1, method=model.mapping))
    want_plain = want_plain.transpose(0, 2, 3, 1)
    assert np.std(want_plain) > 0.1
    np.testing.assert_allclose(got_w, ws, atol=1e-5 * np.abs(ws).max(), rtol=0)
    np.testing.assert_allclose(got_plain, want_plain, atol=2e-4, rtol=0)
    np.testing.assert_allclose(got_trunc, want_trunc.transpose(0, 2, 3, 1), atol=2e-4, rtol=0)
    np.testing.assert_allclose(got_mix, want_mix.transpose(0, 2, 3, 1), atol=2e-4, rtol=0)
    assert np.abs(got_trunc - got_plain).max() > 1e-2  # truncation really changed the image


def test_explicit_noise_and_random_noise(small_pair):
    tg, model, variables = small_pair
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2, STYLE_DIM)).astype(np.float32)
    noise = [rng.standard_normal((2,) + s[1:]).astype(np.float32) for s in model.noise_shapes()]
    with torch.no_grad():
        want = tg([torch.from_numpy(z)], noise=[ref.nchw(n) for n in noise])[0].numpy().transpose(0, 2, 3, 1)
    got = np.asarray(jax.jit(lambda v, z, n: model.apply(v, [z], noise=n))(variables, z, noise))
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=0)
    rand = jax.jit(lambda k: model.apply(variables, [z], rngs={"noise": k}))
    r1, r2, r1b = rand(jax.random.key(0)), rand(jax.random.key(1)), rand(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(r1), np.asarray(r1b))
    assert float(jnp.abs(r1 - r2).max()) > 1e-3


def test_random_mixing_crossover_in_range(small_pair):
    _, model, variables = small_pair
    z = np.random.default_rng(4).standard_normal((2, 1, STYLE_DIM)).astype(np.float32)
    mix = jax.jit(lambda k: model.apply(variables, [z[0], z[1]], return_latents=True, randomize_noise=False,
                                        rngs={"mixing": k})[1])
    seen = set()
    for seed in range(40):
        latent = mix(jax.random.key(seed))
        first = np.all(np.isclose(np.asarray(latent[0]), np.asarray(latent[0, 0])), axis=-1)
        seen.add(int(first.sum()))
    assert seen <= set(range(1, model.n_latent)) and len(seen) > 3


def test_mean_latent(small_pair):
    tg, model, variables = small_pair
    key = jax.random.key(7)
    got = np.asarray(model.apply(variables, key, 256, method=model.mean_latent))
    z = np.array(jax.random.normal(key, (256, STYLE_DIM)))
    with torch.no_grad():
        want = tg.style(torch.from_numpy(z)).mean(0, keepdim=True).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)


@pytest.mark.parametrize("batch", [8, 2])
def test_discriminator_logits(batch):
    torch.manual_seed(9)
    td = ref.randomize_(ref.Discriminator(32, channels=SMALL), seed=9).eval()
    model = sg.Discriminator(size=32, channels=sg.channels_field(SMALL))
    variables = conv.convert_discriminator(_sd(td), model, source="test")
    x = np.random.default_rng(batch).uniform(-1, 1, (batch, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        want = td(ref.nchw(x)).numpy()
    got = np.asarray(jax.jit(model.apply)(variables, x))
    assert got.shape == (batch, 1)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)


def test_full_size_parameter_counts():
    g = jax.eval_shape(lambda k: sg.init_generator(sg.Generator(), k), jax.random.key(0))
    d = jax.eval_shape(lambda k: sg.Discriminator().init(k, jnp.zeros((1, 256, 256, 3))), jax.random.key(0))
    assert sg.count_params(g["params"]) == 30_034_338  # docs/reference.md §3.1 [run]
    assert sg.count_params(d["params"]) == 28_864_129  # docs/reference.md §3.2
    torch_g = ref.Generator(256, 512, 8)
    assert sum(p.numel() for p in torch_g.parameters()) == 30_034_338


@pytest.mark.slow
def test_full_size_generator_image():
    torch.manual_seed(0)
    tg = ref.randomize_(ref.Generator(256, 512, 8), seed=0).eval()
    model = sg.Generator()
    variables = conv.convert_generator(_sd(tg), model, source="test", name="g_ema")
    z = np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)
    with torch.no_grad():
        want = tg([torch.from_numpy(z)], randomize_noise=False)[0].numpy().transpose(0, 2, 3, 1)
    got = np.asarray(jax.jit(lambda v, z: model.apply(v, [z], randomize_noise=False))(variables, z))
    np.testing.assert_allclose(got, want, atol=5e-4, rtol=0)
