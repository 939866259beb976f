"""LSGAN and VGG content losses vs PyTorch (`MSELoss` forms of docs/reference.md §2.6), value and gradient;
the total generator objective (docs/reference.md §2.7) vs its formula. Tolerance: float32, 1e-6 relative."""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax.losses import content, gan, objective  # noqa: E402
from tests.torch_reference import cut_training as ref  # noqa: E402


def _grad(fn, *arrays):
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    out.backward()
    return float(out.detach()), [t.grad.numpy() for t in ts]


def test_discriminator_and_generator_lsgan():
    rng = np.random.default_rng(0)
    fake = rng.normal(size=(2, 30, 30, 1)).astype(np.float32)
    real = rng.normal(size=(2, 30, 30, 1)).astype(np.float32) + 1
    value, (g_fake, g_real) = _grad(lambda f, r: 0.5 * (ref.lsgan(f, False) + ref.lsgan(r, True)), fake, real)
    (got, _), grads = jax.value_and_grad(lambda f, r: (gan.discriminator_loss(f, r)[0], 0), argnums=(0, 1), has_aux=True)(fake, real)
    np.testing.assert_allclose(float(got), value, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grads[0]), g_fake, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(np.asarray(grads[1]), g_real, rtol=1e-5, atol=1e-9)
    value, (g,) = _grad(lambda f: ref.lsgan(f, True), fake)
    got, got_g = jax.value_and_grad(gan.generator_gan_loss)(fake)
    np.testing.assert_allclose(float(got), value, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got_g), g, rtol=1e-5, atol=1e-9)


def test_vgg_content_loss_and_input_mapping():
    rng = np.random.default_rng(1)
    fake, real = rng.normal(size=(2, 2, 4, 4, 8)).astype(np.float32)
    value, (g,) = _grad(lambda f: torch.nn.functional.mse_loss(f, torch.tensor(real)), fake)
    got, got_g = jax.value_and_grad(content.vgg_content_loss)(fake, real)
    np.testing.assert_allclose(float(got), value, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got_g), g, rtol=1e-5, atol=1e-9)
    img = np.array([-1.0, 0.0, 1.0], np.float32)
    np.testing.assert_allclose(content.vgg_input_for_fake(img, "official_code"), [-0.5, 0.5, 1.5])  # Q3
    np.testing.assert_allclose(content.vgg_input_for_fake(img, "paper"), [0.0, 0.5, 1.0])
    with pytest.raises(ValueError):
        content.vgg_input_for_fake(img, "other")


def test_generator_objective_formula():
    t = dict(gan=1.0, gan_pair=2.0, hdce_x=0.3, hdce_y=0.5, src=0.07, style_nce=0.01, lambda_pair=0.25)
    assert float(objective.generator_objective(**t)) == pytest.approx(1.0 + 0.4 + 0.07 + 0.25 * 2.01)
    assert float(objective.generator_objective(**{**t, "hdce_y": None}, vgg=0.2)) == pytest.approx(
        0.2 + 1.0 + 0.3 + 0.07 + 0.25 * 2.01
    )
