"""Non-saturating GAN losses and lazy R1 (value and gradient) against PyTorch autograd.

R1 is checked end to end on a small StyleGAN2 discriminator converted from the PyTorch reference:
the penalty value and its gradient w.r.t. every discriminator parameter (second order, PyTorch
`create_graph=True`). Tolerance: float32, 1e-4 relative to each quantity's scale.
"""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax.convert import stylegan2 as conv  # noqa: E402
from scenimefy_jax.losses import stylegan as losses  # noqa: E402
from scenimefy_jax.models import stylegan2 as sg  # noqa: E402
from tests.torch_reference import stylegan2 as ref  # noqa: E402

SMALL = {4: 16, 8: 16, 16: 8}


def test_logistic_losses_value_and_grad():
    rng = np.random.default_rng(0)
    real, fake = (rng.standard_normal((6, 1)).astype(np.float32) * 3 for _ in range(2))
    tr, tf = torch.tensor(real, requires_grad=True), torch.tensor(fake, requires_grad=True)
    d_loss = torch.nn.functional.softplus(-tr).mean() + torch.nn.functional.softplus(tf).mean()
    g_loss = torch.nn.functional.softplus(-tf).mean()
    gr, gf = torch.autograd.grad(d_loss, [tr, tf])
    (gg,) = torch.autograd.grad(g_loss, [tf])
    v, (jr, jf) = jax.value_and_grad(losses.d_logistic_loss, argnums=(0, 1))(real, fake)
    vg, jg = jax.value_and_grad(losses.g_nonsaturating_loss)(fake)
    np.testing.assert_allclose(float(v), d_loss.item(), rtol=1e-6)
    np.testing.assert_allclose(float(vg), g_loss.item(), rtol=1e-6)
    for a, b in ((jr, gr), (jf, gf), (jg, gg)):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-7)


def test_lazy_r1_value_and_parameter_gradient():
    torch.manual_seed(0)
    td = ref.randomize_(ref.Discriminator(16, channels=SMALL), seed=2)
    model = sg.Discriminator(size=16, channels=sg.channels_field(SMALL))
    params = conv.convert_discriminator({k: v.detach().numpy() for k, v in td.state_dict().items()}, model,
                                        source="test")["params"]
    x = np.random.default_rng(1).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)

    xt = ref.nchw(x).requires_grad_(True)
    pred = td(xt)
    (grad,) = torch.autograd.grad(pred.sum(), xt, create_graph=True)
    penalty = grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()
    want_loss = 10 / 2 * penalty * 16 + 0 * pred[0]  # rosinality's d_reg step
    want_loss = want_loss.sum()
    names = [n for n, _ in td.named_parameters()]
    want_grads = dict(zip(names, torch.autograd.grad(want_loss, list(td.parameters()))))

    def loss_fn(p):
        pen, _ = losses.r1_penalty(lambda im: model.apply({"params": p}, im), x)
        return losses.lazy_r1_loss(pen, gamma=10.0, every=16)

    value, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    assert want_loss.item() > 1e-3
    np.testing.assert_allclose(float(value), want_loss.item(), rtol=1e-4)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    assert len(flat) == len(names)
    for path, g in flat:
        path = tuple(k.key for k in path)
        want = conv.to_flax(path, want_grads[conv.torch_key(path)].numpy())
        scale = max(float(np.abs(want).max()), 1e-6)
        np.testing.assert_allclose(np.asarray(g), want, atol=1e-4 * scale, rtol=0, err_msg=str(path))


def test_lazy_adam_hparams():
    lr, betas = losses.lazy_adam_hparams(0.002, 16)
    assert lr == pytest.approx(0.002 * 16 / 17) and betas == (0.0, pytest.approx(0.99 ** (16 / 17)))
    assert losses.lazy_adam_hparams(0.002, 4)[0] == pytest.approx(0.0016)
