"""FID, KID and the statistics file against independent computations written here (docs/reference.md §6.1).

FID is checked against pytorch-fid's own recipe (`scipy.linalg.sqrtm(s1 @ s2)`, its eps retry, the
imaginary-part check on the diagonal, real part, trace), against a closed form for diagonal Gaussians, and,
for the real feature size D = 2048 with fewer samples than dimensions (where sqrtm takes a minute), against
the nuclear norm: with centred features A1, A2, `s1 s2 = A1^T A1 A2^T A2 / ((n1-1)(n2-1))` has the same
non-zero eigenvalues as `C C^T` for `C = A1 A2^T / sqrt((n1-1)(n2-1))`, so `tr sqrtm(s1 s2)` is the sum of
C's singular values. KID is checked against a loop over rows written from §6.1 with torch-fidelity's draws.
"""
import logging
import os
import pickle
import zipfile

import numpy as np
import pytest
import scipy.linalg

from scenimefy_jax.evaluation import metrics
from scenimefy_jax.evaluation.metrics import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    frechet_terms,
    kernel_inception_distance,
    load_statistics,
    save_statistics,
)


# ----------------------------------------------------------------------------------------- references

def _pytorch_fid_reference(mu1, sigma1, mu2, sigma2, eps=1e-6, force_offset=False):
    """pytorch-fid's recipe, written from docs/reference.md §6.1 with scipy's sqrtm."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if force_offset or not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def _fid_by_nuclear_norm(f1, f2):
    """Exact FID from the features themselves (see the module docstring)."""
    a1, a2 = f1 - f1.mean(0), f2 - f2.mean(0)
    c = a1 @ a2.T / np.sqrt((len(f1) - 1) * (len(f2) - 1))
    tr_covmean = np.linalg.svd(c, compute_uv=False).sum()
    tr1 = (a1 * a1).sum() / (len(f1) - 1)
    tr2 = (a2 * a2).sum() / (len(f2) - 1)
    diff = f1.mean(0) - f2.mean(0)
    return diff @ diff + tr1 + tr2 - 2 * tr_covmean


def _kid_reference(f1, f2, num_subsets, subset_size, seed, degree=3, coef0=1.0):
    """Unbiased MMD^2 over torch-fidelity's draws, summing the kernel row by row."""
    gamma = 1.0 / f1.shape[1]
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(num_subsets):
        x = f1[rng.choice(len(f1), subset_size, replace=False)]
        y = f2[rng.choice(len(f2), subset_size, replace=False)]
        m = subset_size
        within = cross = 0.0
        for i in range(m):
            kx = (x @ x[i] * gamma + coef0) ** degree
            ky = (y @ y[i] * gamma + coef0) ** degree
            within += kx.sum() - kx[i] + ky.sum() - ky[i]
            cross += ((y @ x[i] * gamma + coef0) ** degree).sum()
        values.append(within / (m * (m - 1)) - 2 * cross / (m * m))
    return np.mean(values), np.std(values)


def _features(n, d, seed, shift=0.0):
    """`[n, d]` non-negative, correlated features (like pool3's); one distribution per (d, shift)."""
    mixing = np.random.default_rng(d).normal(size=(d, d)) / np.sqrt(d)
    return np.abs(np.random.default_rng(seed).normal(size=(n, d)) @ mixing) + shift


# ------------------------------------------------------------------------------------------------ FID

def test_feature_statistics_are_float64_mean_and_covariance():
    f = _features(50, 8, 0).astype(np.float32)
    mu, sigma = feature_statistics(f)
    assert mu.dtype == sigma.dtype == np.float64 and mu.shape == (8,) and sigma.shape == (8, 8)
    np.testing.assert_allclose(mu, f.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f.astype(np.float64), rowvar=False), rtol=1e-12)
    for bad in (np.zeros((1, 8)), np.zeros(8), np.zeros((2, 3, 4))):
        with pytest.raises(ValueError):
            feature_statistics(bad)


@pytest.mark.parametrize("d, n", [(64, 500), (256, 100)], ids=["full_rank", "fewer_samples_than_dims"])
def test_fid_matches_pytorch_fid_recipe(d, n):
    f1, f2 = _features(n, d, 1), _features(n + 7, d, 2, shift=0.05)
    mu1, s1 = feature_statistics(f1)
    mu2, s2 = feature_statistics(f2)
    expected = _pytorch_fid_reference(mu1, s1, mu2, s2)
    terms = frechet_terms(mu1, s1, mu2, s2)
    assert not terms.offset_added
    np.testing.assert_allclose(terms.fid, expected, rtol=1e-7)
    np.testing.assert_allclose(terms.mean_term, (mu1 - mu2) @ (mu1 - mu2), rtol=1e-12)
    # fid_from_features takes the low-rank route when n < d: it must give pytorch-fid's number too.
    np.testing.assert_allclose(fid_from_features(f1, f2), expected, rtol=1e-7)
    np.testing.assert_allclose(fid_from_features(f1, f2), _fid_by_nuclear_norm(f1, f2), rtol=1e-7)
    assert isinstance(frechet_distance(mu1, s1, mu2, s2), float)


def test_fid_at_inception_size_with_fewer_samples_than_dims():
    f1, f2 = _features(300, 2048, 3), _features(300, 2048, 4, shift=0.02)
    expected = _fid_by_nuclear_norm(f1, f2)
    assert expected > 1.0
    # Both routes: the eigenvalues of the 2048 x 2048 product (statistics files) and the SVD of the
    # small cross matrix (features at hand).
    np.testing.assert_allclose(frechet_distance(*feature_statistics(f1), *feature_statistics(f2)), expected, rtol=1e-6)
    np.testing.assert_allclose(fid_from_features(f1, f2), expected, rtol=1e-6)


def test_fid_of_identical_sets_is_zero():
    f = _features(500, 64, 5)
    mu, sigma = feature_statistics(f)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9 * np.trace(sigma)


def test_fid_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(6)
    mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
    a, b = rng.uniform(0.1, 3.0, 32), rng.uniform(0.1, 3.0, 32)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    np.testing.assert_allclose(frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), expected, rtol=1e-12)


@pytest.mark.parametrize("failure", ["non_finite", "solver_error"])
def test_fid_retries_with_eps_on_the_diagonals(monkeypatch, failure):
    f1, f2 = _features(200, 16, 7), _features(200, 16, 8, shift=0.1)
    mu1, s1 = feature_statistics(f1)
    mu2, s2 = feature_statistics(f2)
    eps = 1e-2  # large, so that the offset value is far from the plain one
    real_root = metrics._sqrt_eigenvalues
    calls = []

    def failing_once(product):
        calls.append(product)
        if len(calls) == 1:
            if failure == "solver_error":
                raise np.linalg.LinAlgError("Eigenvalues did not converge")
            return np.full(product.shape[0], np.nan + 0j)
        return real_root(product)

    monkeypatch.setattr(metrics, "_sqrt_eigenvalues", failing_once)
    terms = frechet_terms(mu1, s1, mu2, s2, eps=eps)
    assert terms.offset_added and len(calls) == 2
    offset = eps * np.eye(16)
    np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset), rtol=1e-12)
    with_offset = _pytorch_fid_reference(mu1, s1, mu2, s2, eps=eps, force_offset=True)
    without = _pytorch_fid_reference(mu1, s1, mu2, s2)
    assert abs(with_offset - without) > 1e-3
    np.testing.assert_allclose(terms.fid, with_offset, rtol=1e-9)


def test_fid_fails_when_the_retry_fails_too(monkeypatch):
    monkeypatch.setattr(metrics, "_sqrt_eigenvalues", lambda product: np.full(product.shape[0], np.inf + 0j))
    with pytest.raises(ValueError, match="not finite even with eps"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3))


def test_fid_imaginary_component():
    mu = np.zeros(4)
    identity = np.eye(4)
    # An eigenvalue of -1 (not a covariance): pytorch-fid and this both refuse.
    not_psd = np.diag([1.0, 2.0, 3.0, -1.0])
    with pytest.raises(ValueError, match="Imaginary"):
        _pytorch_fid_reference(mu, identity, mu, not_psd)
    with pytest.raises(ValueError, match="imaginary component"):
        frechet_distance(mu, identity, mu, not_psd)
    # -1e-8 (root 1e-4 i, below the 1e-3 tolerance): both keep the real part and agree.
    slightly_negative = np.diag([1.0, 2.0, 3.0, -1e-8])
    np.testing.assert_allclose(frechet_distance(mu, identity, mu, slightly_negative),
                               _pytorch_fid_reference(mu, identity, mu, slightly_negative), rtol=1e-9)


def test_fid_shape_errors():
    mu, sigma = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="different feature sizes"):
        frechet_distance(mu, sigma, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="square"):
        frechet_distance(mu, np.zeros((3, 4)), mu, sigma)
    with pytest.raises(ValueError, match="length"):
        frechet_distance(mu, sigma, np.zeros(4), sigma)
    with pytest.raises(ValueError, match="vector"):
        frechet_distance(np.zeros((3, 1)), sigma, mu, sigma)
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(mu, np.full((3, 3), np.nan), mu, sigma)


# ------------------------------------------------------------------------------------------------ KID

@pytest.mark.parametrize("full_kernels", [True, False], ids=["full_kernels", "per_subset"])
def test_kid_matches_loop_reference(full_kernels):
    f1, f2 = _features(300, 32, 10), _features(280, 32, 11, shift=0.2)
    result = kernel_inception_distance(f1, f2, num_subsets=10, subset_size=100, _full_kernels=full_kernels)
    mean, std = _kid_reference(f1, f2, num_subsets=10, subset_size=100, seed=2020)
    assert result.subset_size == 100 and mean > 0
    np.testing.assert_allclose([result.mean, result.std], [mean, std], rtol=1e-9, atol=1e-14)


def test_kid_reproducible_by_seed():
    f1, f2 = _features(300, 32, 12), _features(300, 32, 13, shift=0.05)
    kwargs = dict(num_subsets=10, subset_size=100)
    first = kernel_inception_distance(f1, f2, **kwargs)
    assert first == kernel_inception_distance(f1, f2, **kwargs)
    other = kernel_inception_distance(f1, f2, seed=7, **kwargs)
    assert other.mean != first.mean and other.std != first.std
    np.testing.assert_allclose([other.mean, other.std], _kid_reference(f1, f2, 10, 100, seed=7), rtol=1e-9)


def test_kid_shrinks_the_subset_with_a_warning(caplog):
    f1, f2 = _features(60, 16, 14), _features(80, 16, 15, shift=0.1)
    with caplog.at_level(logging.WARNING):
        result = kernel_inception_distance(f1, f2, num_subsets=5, subset_size=100)
    assert result.subset_size == 60
    assert "subset_size=100" in caplog.text and "subsets of 60" in caplog.text
    np.testing.assert_allclose([result.mean, result.std], _kid_reference(f1, f2, 5, 60, seed=2020), rtol=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(f1[:1], f2)
    with pytest.raises(ValueError, match="feature sizes"):
        kernel_inception_distance(f1, f2[:, :8])


def test_kid_near_zero_for_one_distribution_and_positive_for_shifted():
    same = kernel_inception_distance(_features(300, 32, 16), _features(300, 32, 17), num_subsets=10,
                                     subset_size=100)
    shifted = kernel_inception_distance(_features(300, 32, 16), _features(300, 32, 18, shift=0.5),
                                        num_subsets=10, subset_size=100)
    assert abs(same.mean) < 3 * same.std + 1e-4
    assert shifted.mean > 100 * max(abs(same.mean), same.std)


# ------------------------------------------------------------------------------------ statistics file

def _moments(d=8, seed=20):
    f = _features(40, d, seed)
    mu, sigma = feature_statistics(f)
    return f, mu, sigma


def test_statistics_round_trip(tmp_path):
    f, mu, sigma = _moments()
    path = save_statistics(tmp_path / "real.npz", mu, sigma, features=f,
                           metadata={"protocol": "pytorch_fid", "n": 40, "source": "anime/"})
    assert path == tmp_path / "real.npz"
    stats = load_statistics(path)
    np.testing.assert_array_equal(stats.mu, mu)
    np.testing.assert_array_equal(stats.sigma, sigma)
    assert stats.features.dtype == np.float32
    np.testing.assert_array_equal(stats.features, f.astype(np.float32))
    assert stats.metadata == {"protocol": "pytorch_fid", "n": 40, "source": "anime/"}

    bare = load_statistics(save_statistics(tmp_path / "bare", mu, sigma))  # `.npz` appended, like np.savez
    assert (tmp_path / "bare.npz").exists() and not (tmp_path / "bare").exists()
    assert bare.features is None and bare.metadata == {}
    np.testing.assert_array_equal(bare.sigma, sigma)


def test_statistics_interoperate_with_pytorch_fid_files(tmp_path):
    _, mu, sigma = _moments()
    for write in (np.savez, np.savez_compressed):  # pytorch-fid's --save-stats uses the compressed one
        path = tmp_path / f"{write.__name__}.npz"
        write(path, mu=mu, sigma=sigma)
        stats = load_statistics(path)
        np.testing.assert_array_equal(stats.mu, mu)
        assert stats.features is None and stats.metadata == {}

    path = save_statistics(tmp_path / "ours.npz", mu, sigma, metadata={"n": 40})
    with np.load(path, allow_pickle=False) as f:  # how pytorch-fid reads it (allow_pickle=False here too)
        np.testing.assert_array_equal(f["mu"][:], mu)
        np.testing.assert_array_equal(f["sigma"][:], sigma)
        assert f["metadata"].dtype.kind == "U" and f["metadata"].ndim == 0


def _expect_error(path, match):
    with pytest.raises(ValueError, match=match) as error:
        load_statistics(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_statistics_bad_files(tmp_path):
    _, mu, sigma = _moments()
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive at all")
    _expect_error(garbage, "not a readable")

    truncated = tmp_path / "truncated.npz"
    data = save_statistics(tmp_path / "whole.npz", mu, sigma).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    _expect_error(truncated, "readable")

    npy = tmp_path / "single.npy"
    np.save(npy, mu)
    _expect_error(npy, "not an .npz")

    np.savez(tmp_path / "no_sigma.npz", mu=mu)
    _expect_error(tmp_path / "no_sigma.npz", "no sigma")

    np.savez(tmp_path / "wrong_shape.npz", mu=mu, sigma=sigma[:, :-1])
    _expect_error(tmp_path / "wrong_shape.npz", r"sigma \[D, D\]")

    np.savez(tmp_path / "wrong_features.npz", mu=mu, sigma=sigma, features=np.zeros((5, 3), np.float32))
    _expect_error(tmp_path / "wrong_features.npz", "features")

    np.savez(tmp_path / "nan.npz", mu=np.full_like(mu, np.nan), sigma=sigma)
    _expect_error(tmp_path / "nan.npz", "non-finite")

    np.savez(tmp_path / "bad_meta.npz", mu=mu, sigma=sigma, metadata=np.array("[1, 2]"))
    _expect_error(tmp_path / "bad_meta.npz", "metadata")

    with pytest.raises(FileNotFoundError):
        load_statistics(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="non-finite"):
        save_statistics(tmp_path / "out.npz", mu, sigma * np.inf)


UNPICKLED = []


def _record_unpickling():
    UNPICKLED.append(True)
    return 0


class _Trap:
    def __reduce__(self):
        return _record_unpickling, ()


def test_statistics_refuse_pickled_arrays_without_unpickling(tmp_path):
    _, mu, sigma = _moments()
    trap = np.array([_Trap()], dtype=object)
    pickle.loads(pickle.dumps(trap))  # the trap works ...
    assert UNPICKLED == [True]
    UNPICKLED.clear()
    for name in ("mu", "metadata"):
        arrays = {"mu": mu, "sigma": sigma, name: trap}
        path = tmp_path / f"pickled_{name}.npz"
        np.savez(path, **arrays)  # np.savez pickles object arrays
        with zipfile.ZipFile(path) as archive:
            assert f"{name}.npy" in archive.namelist()
        _expect_error(path, "[Oo]bject arrays")
    assert UNPICKLED == []  # ... and loading never sprang it


def test_statistics_write_is_atomic(tmp_path, monkeypatch):
    _, mu, sigma = _moments()
    path = save_statistics(tmp_path / "stats.npz", mu, sigma)
    save_statistics(path, mu + 1.0, sigma)  # replaces the existing file
    np.testing.assert_array_equal(load_statistics(path).mu, mu + 1.0)
    assert os.listdir(tmp_path) == ["stats.npz"]

    def dies_halfway(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(metrics.np, "savez", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_statistics(path, mu + 2.0, sigma)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["stats.npz"]  # no temporary file left behind
    np.testing.assert_array_equal(load_statistics(path).mu, mu + 1.0)  # the old file untouched
