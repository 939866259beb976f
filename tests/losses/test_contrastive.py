"""PatchNCE, hard-negative weights, hDCE and SRC vs the official loss forms in PyTorch (docs/reference.md §2.6).

Features are random unit vectors (what F outputs). Values and gradients with respect to the query are
compared against PyTorch autograd through the reference modules of `tests/torch_reference/cut_training.py`.
Tolerances (float32): values 1e-5 relative; gradients 1e-4 of the gradient's largest entry.
hDCE is checked twice because its value and gradient differ by design (Q7); SRC's gradient is compared
in its tangential part (the radial part is irrelevant on unit vectors, docs/reference.md §2.6).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax.losses import contrastive as C  # noqa: E402
from scenimefy_jax.losses import objective  # noqa: E402
from tests.torch_reference import cut_training as ref  # noqa: E402


def _unit(rng, p, d=256, scale=1.0):
    v = rng.normal(size=(p, d)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(params=[64, 256], ids=["P64", "P256"])
def qk(request):
    rng = np.random.default_rng(request.param)
    k = _unit(rng, request.param)
    # queries correlated with their keys, as for a translated image
    q = _unit(rng, request.param)
    q = 0.15 * k + q
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    return q, k


def _torch_grad(fn, q, *args):
    tq = torch.tensor(q, requires_grad=True)
    out = fn(tq, *args)
    out.backward()
    return float(out.detach()), tq.grad.numpy()


def _close_grad(got, want, rel=1e-4):
    np.testing.assert_allclose(np.asarray(got), want, atol=rel * np.max(np.abs(want)), rtol=0)


def test_patch_nce_rows_value_and_gradient(qk):
    q, k = qk
    want_rows = ref.patch_nce(torch.tensor(q), torch.tensor(k)).numpy()
    got_rows = C.patch_nce_loss(q, k)
    np.testing.assert_allclose(np.asarray(got_rows), want_rows, rtol=1e-5, atol=1e-5)
    value, grad = _torch_grad(lambda tq: ref.patch_nce(tq, torch.tensor(k)).mean(), q)
    got_value, got_grad = jax.value_and_grad(lambda q: jnp.mean(C.patch_nce_loss(q, k)))(q)
    np.testing.assert_allclose(float(got_value), value, rtol=1e-5)
    assert value > 0.1  # not a degenerate, near-zero loss
    _close_grad(got_grad, grad)
    # keys receive no gradient
    assert np.all(np.asarray(jax.grad(lambda k: jnp.mean(C.patch_nce_loss(q, k)))(k)) == 0)


@pytest.mark.parametrize("gamma", [48.0, 10.0])
def test_hard_negative_weights(qk, gamma):
    q, k = qk
    _, want = ref.src(torch.tensor(q), torch.tensor(k), gamma, only_weight=True)
    got = np.asarray(C.hard_negative_weights(k, gamma))
    np.testing.assert_allclose(got, want[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.max(axis=1), 1.0, rtol=0, atol=1e-6)  # row maxima are exactly 1


def test_hdce_value_is_weighted_patchnce(qk):
    q, k = qk
    w = np.asarray(C.hard_negative_weights(k, 44.0))
    want = float(ref.hdce(torch.tensor(q), torch.tensor(k), torch.tensor(w)[None]).mean())
    got = float(C.hdce_loss(q, k, w))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # by design (Q7) the value is the CE over the *weighted* negatives: check against that directly
    np.testing.assert_allclose(got, float(jnp.mean(C.patch_nce_loss(q, k, weights=w))), rtol=1e-6)
    assert abs(got - float(jnp.mean(C.patch_nce_loss(q, k)))) > 1e-5  # and not the plain PatchNCE


def test_hdce_gradient_is_decoupled_logsumexp(qk):
    q, k = qk
    w = np.asarray(C.hard_negative_weights(k, 44.0))
    _, want = _torch_grad(lambda tq: ref.hdce(tq, torch.tensor(k), torch.tensor(w)[None]).mean(), q)
    got = jax.grad(lambda q: C.hdce_loss(q, k, w))(q)
    _close_grad(got, want)

    # independent closed form: d/dq mean_i logsumexp_j (n_ij - s_ii)/tau, n_ij weighted, diag -10
    def lse(q):
        s = q @ k.T
        neg = jnp.where(jnp.eye(len(q), dtype=bool), -10.0, s * w)
        return jnp.mean(jax.nn.logsumexp((neg - jnp.diag(s)[:, None]) / 0.07, axis=1))

    _close_grad(got, np.asarray(jax.grad(lse)(q)))


def test_src_value_and_tangential_gradient(qk):
    q, k = qk
    value, want = _torch_grad(lambda tq: ref.src(tq, torch.tensor(k), 44.0)[0], q)
    got_value, got = jax.value_and_grad(lambda q: C.src_loss(q, k))(q)
    np.testing.assert_allclose(float(got_value), value, rtol=1e-4, atol=1e-6)
    tangential = lambda g: g - np.sum(g * q, axis=1, keepdims=True) * q  # noqa: E731
    _close_grad(tangential(np.asarray(got)), tangential(want), rel=1e-3)
    assert value > 0 and float(C.src_loss(k, k)) == pytest.approx(0.0, abs=1e-5)


def test_batched_losses_are_per_image_means():
    rng = np.random.default_rng(9)
    q = np.stack([_unit(rng, 64) for _ in range(3)])
    k = np.stack([_unit(rng, 64) for _ in range(3)])
    w = np.stack([np.asarray(C.hard_negative_weights(k[i], 30.0)) for i in range(3)])
    per_image = [ref.src(torch.tensor(q[i]), torch.tensor(k[i]), 30.0)[0] for i in range(3)]
    np.testing.assert_allclose(float(C.batched(C.src_loss)(q, k)), np.mean([float(v) for v in per_image]), rtol=1e-4)
    per_image = [ref.hdce(torch.tensor(q[i]), torch.tensor(k[i]), torch.tensor(w[i])[None]).mean() for i in range(3)]
    np.testing.assert_allclose(float(C.batched(C.hdce_loss)(q, k, w)), np.mean([float(v) for v in per_image]), rtol=1e-5)
    per_image = [ref.patch_nce(torch.tensor(q[i]), torch.tensor(k[i])).mean() for i in range(3)]
    np.testing.assert_allclose(float(C.batched(C.patch_nce_loss)(q, k)), np.mean([float(v) for v in per_image]), rtol=1e-5)
    # the official batch_size grouping gives the same per-image negatives
    flat = ref.patch_nce(torch.tensor(q.reshape(-1, 256)), torch.tensor(k.reshape(-1, 256)), batch_size=3).mean()
    np.testing.assert_allclose(float(C.batched(C.patch_nce_loss)(q, k)), float(flat), rtol=1e-5)


@pytest.mark.parametrize("faithful_to,factor", [("official_code", 0.05), ("paper", 1.0)])
def test_style_nce_weight_per_mode(faithful_to, factor):
    rng = np.random.default_rng(11)
    qs = [np.stack([_unit(rng, 32)]) for _ in range(5)]
    ks = [np.stack([_unit(rng, 32)]) for _ in range(5)]
    want = sum(ref.patch_nce(torch.tensor(q[0]), torch.tensor(k[0])).mul(0.05).mean() for q, k in zip(qs, ks)) / 5
    got = objective.style_nce_term(qs, ks, 0.05, 0.07, faithful_to)
    np.testing.assert_allclose(float(got), float(want) * factor, rtol=1e-5)
