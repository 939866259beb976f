"""CLIP global and patch contrastive losses (value and gradient) against PyTorch references written
from docs/reference.md §4.4 (the patch loss is `tests/torch_reference/stylegan_finetune.patch_loss`, the one the
fine-tuning parity test uses: OneshotCLIP `PatchLoss`, detached keys, -10 diagonal, CE to index 0).
Tolerance: float32, 1e-5 relative.
"""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax.losses import clip_losses as cl  # noqa: E402
from tests.torch_reference.stylegan_finetune import patch_loss as torch_patch_loss  # noqa: E402


def _feats(n, d=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((n, d)).astype(np.float32)


def test_global_loss_value_and_grad():
    s, t = _feats(5)
    ts, tt = torch.tensor(s), torch.tensor(t, requires_grad=True)
    want = (1 - torch.nn.functional.cosine_similarity(ts, tt)).mean()
    (want_g,) = torch.autograd.grad(want, [tt])
    v, g = jax.value_and_grad(cl.clip_global_loss, argnums=1)(s, t)
    np.testing.assert_allclose(float(v), want.item(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(g), want_g.numpy(), atol=1e-6)


@pytest.mark.parametrize("n_crops,batch,tau", [(16, 16, 1.0), (16, 4, 1.0), (4, 2, 0.07)])
def test_patch_loss_official_grouping(n_crops, batch, tau):
    q, k = _feats(n_crops * batch, seed=n_crops + batch)
    tq = torch.tensor(q, requires_grad=True)
    want = torch_patch_loss(tq, torch.tensor(k, requires_grad=True), batch, tau)
    (want_g,) = torch.autograd.grad(want, [tq])
    v, (gq, gk) = jax.value_and_grad(cl.patch_clip_loss, argnums=(0, 1))(q, k, batch, tau=tau)
    np.testing.assert_allclose(float(v), want.item(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gq), want_g.numpy(), atol=1e-6)
    assert float(np.abs(np.asarray(gk)).max()) == 0.0  # keys are detached


def test_patch_loss_per_image_grouping_uses_same_image_negatives():
    n_crops, batch, tau = 3, 2, 0.07
    q, k = _feats(n_crops * batch, seed=5)
    # reference: reorder crop-major rows to image-major, then group per image
    order = [c * batch + b for b in range(batch) for c in range(n_crops)]
    tq = torch.tensor(q[order], requires_grad=True)
    want = torch_patch_loss(tq, torch.tensor(k[order]), batch, tau)
    (want_g,) = torch.autograd.grad(want, [tq])
    v, g = jax.value_and_grad(cl.patch_clip_loss)(q, k, batch, tau=tau, grouping="per_image")
    np.testing.assert_allclose(float(v), want.item(), rtol=1e-5)
    inv = np.argsort(order)
    np.testing.assert_allclose(np.asarray(g), want_g.numpy()[inv], atol=1e-6)
    assert abs(float(v) - float(cl.patch_clip_loss(q, k, batch, tau=tau))) > 1e-4  # groupings differ


def test_crops_are_crop_major_and_positions_in_range():
    images = np.random.default_rng(0).standard_normal((3, 64, 64, 3)).astype(np.float32)
    pos = cl.sample_crop_positions(jax.random.key(0), 5, image_size=64, crop_size=8)
    pos_np = np.asarray(pos)
    assert pos_np.min() >= 0 and pos_np.max() <= 64 - 8 - 1
    crops = np.asarray(cl.extract_crops(images, pos, 8))
    assert crops.shape == (15, 8, 8, 3)
    for c in range(5):
        y, x = pos_np[c]
        for b in range(3):
            np.testing.assert_array_equal(crops[c * 3 + b], images[b, y : y + 8, x : x + 8])
    many = np.asarray(cl.sample_crop_positions(jax.random.key(1), 4000))
    assert many.min() == 0 and many.max() == 223  # numpy randint(0, 224): 0..223 inclusive
