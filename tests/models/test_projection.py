"""Projection heads F / F_s and patch sampling vs a PyTorch PatchSampleF written from docs/reference.md §2.3.

Given the same positions, projected unit vectors agree to 1e-5 absolute (float32). Sampling is checked
for its contract: no repeated position, range, min(256, H*W) positions, shared vs per-image sets.
"""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax.convert import projection as convert_projection  # noqa: E402
from scenimefy_jax.models.projection import PatchProjector, gather_patches, sample_patch_ids  # noqa: E402
from tests.torch_reference import cut_networks as ref  # noqa: E402
from tests.torch_reference.cut_training import PatchSampleF  # noqa: E402

CHANNELS = (3, 128, 256, 256, 256)


@pytest.fixture(scope="module")
def heads():
    torch_f = ref.randomize_(PatchSampleF(CHANNELS, 256), seed=5)
    sd = {k: v.detach().numpy() for k, v in torch_f.state_dict().items()}
    return torch_f, convert_projection.convert_state_dict(sd).params


def _features(batch, size=16):
    rng = np.random.default_rng(0)
    sizes = [size + 6, size, size // 2, size // 4, size // 4]
    return [rng.normal(size=(batch, s, s, c)).astype(np.float32) for s, c in zip(sizes, CHANNELS)]


def test_projection_matches_pytorch_with_shared_positions(heads):
    torch_f, params = heads
    feats = _features(2)
    ids = sample_patch_ids(jax.random.key(1), [f.shape[1:3] for f in feats], 256)
    assert [int(i.shape[0]) for i in ids] == [256, 256, 64, 16, 16]
    got = PatchProjector(CHANNELS).apply({"params": params}, feats, ids)
    with torch.no_grad():
        want = torch_f([ref.nchw(f) for f in feats], [torch.from_numpy(np.asarray(i, np.int64)) for i in ids])
    for g, w in zip(got, want):
        assert g.shape[:2] == (2, w.shape[0] // 2)
        np.testing.assert_allclose(np.asarray(g).reshape(-1, 256), w.numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(np.asarray(g), axis=-1), 1.0, atol=1e-5)


def test_per_image_positions_equal_per_image_reference(heads):
    torch_f, params = heads
    feats = _features(3)
    ids = sample_patch_ids(jax.random.key(2), [f.shape[1:3] for f in feats], 256, batch_size=3)
    got = PatchProjector(CHANNELS).apply({"params": params}, feats, ids)
    for b in range(3):
        with torch.no_grad():
            want = torch_f([ref.nchw(f[b : b + 1]) for f in feats],
                           [torch.from_numpy(np.asarray(i[b], np.int64)) for i in ids])
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g[b]), w.numpy(), atol=1e-5, rtol=0)


def test_sampling_contract():
    sizes = [(38, 38), (4, 4)]
    shared = sample_patch_ids(jax.random.key(3), sizes, 256)
    again = sample_patch_ids(jax.random.key(3), sizes, 256)
    other = sample_patch_ids(jax.random.key(4), sizes, 256)
    per_image = sample_patch_ids(jax.random.key(3), sizes, 256, batch_size=4)
    for ids, (h, w) in zip(shared, sizes):
        ids = np.asarray(ids)
        assert ids.shape == (min(256, h * w),) and len(set(ids.tolist())) == ids.size
        assert ids.min() >= 0 and ids.max() < h * w
    np.testing.assert_array_equal(shared[0], again[0])
    assert not np.array_equal(shared[0], other[0])
    assert per_image[0].shape == (4, 256)
    assert len({tuple(np.asarray(r).tolist()) for r in per_image[0]}) == 4  # independent per image
    assert all(len(set(np.asarray(r).tolist())) == 256 for r in per_image[0])
    # all 16 positions of a 4x4 map are used, in a random order
    assert sorted(np.asarray(shared[1]).tolist()) == list(range(16))


def test_gather_is_row_major():
    f = np.arange(2 * 3 * 4 * 1, dtype=np.float32).reshape(2, 3, 4, 1)
    got = gather_patches(f, np.array([0, 5, 11]))
    np.testing.assert_array_equal(np.asarray(got)[..., 0], [[0, 5, 11], [12, 17, 23]])
    got = gather_patches(f, np.array([[1, 2], [3, 4]]))
    np.testing.assert_array_equal(np.asarray(got)[..., 0], [[1, 2], [15, 16]])


def test_l2_normalize_gradient_is_finite_for_an_all_zero_patch_and_official_elsewhere():
    """A patch whose features are all zero (dead ReLUs) made the official Normalize's gradient NaN."""
    import jax.numpy as jnp

    from scenimefy_jax.models.projection import NORM_EPS, l2_normalize

    v = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    v[2] = 0.0
    w = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    value, grad = jax.value_and_grad(lambda x: jnp.sum(l2_normalize(x) * w))(jnp.asarray(v))

    x = torch.from_numpy(v.copy()).requires_grad_(True)  # the official Normalize(power=2)
    norm = x.pow(2).sum(1, keepdim=True).pow(1.0 / 2)
    (x.div(norm + 1e-7) * torch.from_numpy(w)).sum().backward()
    official = x.grad.numpy()
    assert np.isnan(official[2]).all()  # the defect this guards against
    assert np.isfinite(np.asarray(grad)).all()
    rows = [0, 1, 3]
    np.testing.assert_allclose(np.asarray(grad)[rows], official[rows], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grad)[2], w[2] / NORM_EPS, rtol=1e-6)  # d(v / eps)/dv at v = 0
    np.testing.assert_allclose(float(value), float((x.detach().div(norm.detach() + 1e-7) * torch.from_numpy(w)).sum()),
                               rtol=1e-6)
