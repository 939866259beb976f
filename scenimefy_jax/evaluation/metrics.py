"""FID and KID from Inception features, and the `.npz` statistics file (docs/reference.md §6.1).

* `feature_statistics` / `frechet_distance` / `fid_from_features`: pytorch-fid's FID,
  `|mu1 - mu2|^2 + tr s1 + tr s2 - 2 tr sqrtm(s1 s2)` in float64, with its retry (`eps * I` added to both
  covariances when the square root is not finite) and its failure on a large imaginary part.
* `kernel_inception_distance`: torch-fidelity's KID with its defaults (100 subsets of 1000, cubic
  polynomial kernel, seed 2020) and its order of random draws, so numbers are comparable with it.
* `save_statistics` / `load_statistics`: the file pytorch-fid's `--save-stats` writes (`mu`, `sigma`),
  optionally with the features (so KID can be computed against a cached reference) and JSON metadata.

FID is biased in n: compare only values computed from the same number of images, and always name the input
protocol (`protocols.py`) the features came from.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from absl import logging

# pytorch-fid's tolerance on the imaginary part of sqrtm(s1 s2) (it checks the diagonal).
IMAGINARY_TOLERANCE = 1e-3


# ----------------------------------------------------------------------------------------------- FID

def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean `[D]` and covariance `[D, D]` (`np.cov(rowvar=False)`, ddof 1), float64, of `[N, D]` features."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"feature statistics need at least 2 samples, got {features.shape[0]}")
    features = features.astype(np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


class FrechetTerms(NamedTuple):
    """The two parts of FID: `fid = mean_term + trace_term`."""

    mean_term: float  # |mu1 - mu2|^2
    trace_term: float  # tr s1 + tr s2 - 2 tr sqrtm(s1 s2)
    offset_added: bool  # True when `eps * I` had to be added to both covariances (pytorch-fid's retry)

    @property
    def fid(self) -> float:
        return self.mean_term + self.trace_term


def _sqrt_eigenvalues(product: np.ndarray) -> np.ndarray:
    """Principal square roots (complex) of the eigenvalues of `product`; their sum is `tr sqrtm(product)`."""
    return np.sqrt(np.linalg.eigvals(product).astype(np.complex128))


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> np.ndarray | None:
    """The roots of `_sqrt_eigenvalues(sigma1 @ sigma2)`, or None where they cannot be computed finitely."""
    try:
        roots = _sqrt_eigenvalues(sigma1 @ sigma2)
    except np.linalg.LinAlgError:  # eigenvalue iteration did not converge
        return None
    return roots if np.all(np.isfinite(roots)) else None


def _check_moments(mu: np.ndarray, sigma: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1:
        raise ValueError(f"mu{which} must be a vector [D], got shape {mu.shape}")
    if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
        raise ValueError(f"sigma{which} must be a square matrix [D, D], got shape {sigma.shape}")
    if sigma.shape[0] != mu.shape[0]:
        raise ValueError(f"sigma{which} is {sigma.shape} but mu{which} has length {mu.shape[0]}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"mu{which}/sigma{which} contain non-finite values")
    return mu, sigma


def frechet_terms(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> FrechetTerms:
    """`frechet_distance` split into its mean and trace terms (see there)."""
    mu1, sigma1 = _check_moments(mu1, sigma1, "1")
    mu2, sigma2 = _check_moments(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two sets have different feature sizes: {mu1.shape[0]} and {mu2.shape[0]}")

    offset_added = False
    roots = _trace_sqrt_product(sigma1, sigma2)
    if roots is None:
        # pytorch-fid: "fid calculation produces singular product; adding eps to diagonal of cov estimates".
        logging.warning("FID: the square root of sigma1 @ sigma2 is not finite; adding %g to the covariance "
                        "diagonals and retrying", eps)
        offset = eps * np.eye(sigma1.shape[0])
        roots = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
        offset_added = True
        if roots is None:
            raise ValueError(f"FID: the square root of sigma1 @ sigma2 is not finite even with eps={eps} added")
    largest_imaginary = float(np.max(np.abs(roots.imag)))
    if largest_imaginary > IMAGINARY_TOLERANCE:
        raise ValueError(f"FID: imaginary component {largest_imaginary:.3g} in sqrtm(sigma1 @ sigma2) exceeds "
                         f"{IMAGINARY_TOLERANCE:g}; the covariances are not positive semi-definite")
    # pytorch-fid takes the trace of the (real part of the) covariances as given, not of the offset ones.
    trace_covmean = float(np.sum(roots.real))
    diff = mu1 - mu2
    mean_term = float(diff @ diff)
    trace_term = float(np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean)
    return FrechetTerms(mean_term, trace_term, offset_added)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussians `N(mu1, sigma1)` and `N(mu2, sigma2)`, pytorch-fid's FID.

    `|mu1 - mu2|^2 + tr sigma1 + tr sigma2 - 2 tr sqrtm(sigma1 @ sigma2)`, float64. Inputs: `mu [D]`,
    `sigma [D, D]` (ValueError on other shapes, different D, or non-finite values).

    The square root: only its trace enters FID, and the trace of the principal square root of a matrix is
    the sum of the principal square roots of its eigenvalues, so `tr sqrtm(s1 s2)` is computed as
    `real(sum(sqrt(eigvals(s1 @ s2))))` (docs/reference.md §6.1). For covariances (positive semi-definite)
    those eigenvalues are real and >= 0, since `s1 s2` is similar to `s1^1/2 s2 s1^1/2`. This gives
    pytorch-fid's value (its `scipy.linalg.sqrtm(s1 @ s2)` followed by trace and real part) without sqrtm's
    troubles on the singular products that fewer samples than dimensions give, and for D = 2048 takes a
    few seconds instead of a minute.

    As in pytorch-fid: when the roots are not finite (or the eigenvalue solver fails), `eps * I` is added to
    both covariances and the root is taken again (`FrechetTerms.offset_added` says so); the traces
    `tr sigma1 + tr sigma2` remain those of the inputs. Then, where pytorch-fid fails when an entry on the
    diagonal of `sqrtm` has an imaginary part above 1e-3, this fails when any root has one: each eigenvalue
    contributes its root's imaginary part to `imag(tr sqrtm)` (the sum of that diagonal), and only an
    eigenvalue further than about 1e-6 below the non-negative real axis, i.e. a covariance that is not
    positive semi-definite, makes a root's exceed 1e-3. Rounding in genuine covariances moves eigenvalues
    by about 1e-16 |s1 s2| and gives roots with imaginary parts near 1e-8, which the real part discards.
    """
    return frechet_terms(mu1, sigma1, mu2, sigma2, eps).fid


def fid_from_features(features1: np.ndarray, features2: np.ndarray, eps: float = 1e-6) -> float:
    """FID between two `[N, D]` feature sets (the sets' N may differ; FID values compare only at equal N).

    With fewer samples than dimensions in either set (e.g. 500 held-out photos against 2048-d features)
    the covariances have rank < D and the trace of the root is computed exactly in the small space:
    with `A1`, `A2` the centred features, `s1 s2 = A1^T (A1 A2^T) A2 / ((n1 - 1)(n2 - 1))` has the
    non-zero eigenvalues of `M M^T`, `M = A2 A1^T / sqrt((n1 - 1)(n2 - 1))`, so `tr sqrtm(s1 s2)` is the
    sum of the singular values of `M` (`[n2, n1]`): real, finite, no eps retry needed, and an SVD of a
    small matrix instead of the eigenvalues of a 2048 x 2048 one. Otherwise it is `frechet_distance` of
    the two sets' statistics.
    """
    f1 = np.asarray(features1, np.float64)
    f2 = np.asarray(features2, np.float64)
    mu1, sigma1 = feature_statistics(f1)  # also validates shapes and sizes
    mu2, sigma2 = feature_statistics(f2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two sets have different feature sizes: {mu1.shape[0]} and {mu2.shape[0]}")
    (n1, d), n2 = f1.shape, f2.shape[0]
    if min(n1, n2) >= d:
        return frechet_distance(mu1, sigma1, mu2, sigma2, eps)
    a1, a2 = f1 - mu1, f2 - mu2
    m = (a2 @ a1.T) / np.sqrt((n1 - 1) * (n2 - 1))
    trace_covmean = float(np.sum(np.linalg.svd(m, compute_uv=False)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean)


# ----------------------------------------------------------------------------------------------- KID

class KernelInceptionDistance(NamedTuple):
    """KID's mean and std (ddof 0) over the subsets, and the subset size actually used."""

    mean: float
    std: float
    subset_size: int


def _polynomial_kernel(a: np.ndarray, b: np.ndarray, gamma: float, coef0: float, degree: int) -> np.ndarray:
    return (a @ b.T * gamma + coef0) ** degree


def _mmd2_unbiased(sum_xx: np.ndarray, diag_xx: np.ndarray, sum_yy: np.ndarray, diag_yy: np.ndarray,
                   sum_xy: np.ndarray, m: int) -> np.ndarray:
    """Unbiased MMD^2 from the kernel sums of subsets of size m: the within-set sums leave out their diagonals."""
    return (sum_xx - diag_xx + sum_yy - diag_yy) / (m * (m - 1)) - 2.0 * sum_xy / (m * m)


def _masked_kernel_sums(a: np.ndarray, b: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray, kernel,
                        same: bool, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For every subset s, the sum of `K(a, b)[i, j]` over rows i and columns j it selects (`mask_a[s, i]`,
    `mask_b[s, j]` are 0/1), i.e. `mask_a[s] @ K(a, b) @ mask_b[s]`, and (with `same`, where b is a) the sum of
    the selected diagonal entries. The kernel is computed once, in row blocks, so memory stays bounded."""
    sums = np.zeros(mask_a.shape[0], np.float64)
    diagonals = np.zeros(mask_a.shape[0], np.float64)
    for start in range(0, a.shape[0], block):
        stop = min(start + block, a.shape[0])
        k = kernel(a[start:stop], b)  # [rows, N_b]
        sums += np.einsum("sj,sj->s", mask_a[:, start:stop] @ k, mask_b)
        if same:
            diagonals += mask_a[:, start:stop] @ np.diagonal(k[:, start:stop])
    return sums, diagonals


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, *, num_subsets: int = 100,
                              subset_size: int = 1000, degree: int = 3, gamma: float | None = None,
                              coef0: float = 1.0, seed: int = 2020,
                              _full_kernels: bool | None = None) -> KernelInceptionDistance:
    """KID between `[N1, D]` and `[N2, D]` features, torch-fidelity's definition and defaults (float64).

    For each of `num_subsets` subsets, `subset_size` rows of each set are drawn without replacement from one
    `np.random.RandomState(seed)` (set 1 first, then set 2, subset after subset: torch-fidelity's order), and
    the unbiased MMD^2 is taken under the kernel `k(x, y) = (gamma x.y + coef0) ** degree`, `gamma = 1 / D`
    by default. Returns the mean and std (ddof 0) over the subsets (papers often quote them x1000).

    With fewer than `subset_size` rows in a set, the subset shrinks to `min(N1, N2)` with a warning;
    `subset_size` of the result says which size was used. Fewer than 2 rows: ValueError.

    Only sums of kernel entries enter MMD^2. Up to about ten times `subset_size` rows per set, the three full
    kernel matrices cost less than the subsets' own, so they are computed once (in row blocks) and every
    subset's sums are read off them with 0/1 selection vectors; with more rows each subset computes its own
    `[m, m]` kernels. `_full_kernels` forces one way (for tests); both agree up to rounding.
    """
    features1 = np.asarray(features1, dtype=np.float64)
    features2 = np.asarray(features2, dtype=np.float64)
    if features1.ndim != 2 or features2.ndim != 2:
        raise ValueError(f"features must be [N, D], got shapes {features1.shape} and {features2.shape}")
    (n1, d), (n2, d2) = features1.shape, features2.shape
    if d != d2:
        raise ValueError(f"the two sets have different feature sizes: {d} and {d2}")
    if num_subsets < 1 or subset_size < 2 or degree < 1:
        raise ValueError(f"need num_subsets >= 1, subset_size >= 2, degree >= 1; got {num_subsets}, "
                         f"{subset_size}, {degree}")
    if min(n1, n2) < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {n1} and {n2}")
    m = subset_size
    if min(n1, n2) < m:
        m = min(n1, n2)
        logging.warning("KID: fewer samples than subset_size=%d (%d and %d); using subsets of %d instead",
                        subset_size, n1, n2, m)
    gamma = 1.0 / d if gamma is None else float(gamma)

    def kernel(a, b):
        return _polynomial_kernel(a, b, gamma, coef0, degree)

    rng = np.random.RandomState(seed)
    draws = []
    for _ in range(num_subsets):  # torch-fidelity's order: set 1, then set 2, for each subset in turn
        idx1 = rng.choice(n1, m, replace=False)
        idx2 = rng.choice(n2, m, replace=False)
        draws.append((idx1, idx2))

    if _full_kernels is None:
        _full_kernels = n1 * n1 + n2 * n2 + n1 * n2 <= 3 * m * m * num_subsets
    if _full_kernels:
        mask1 = np.zeros((num_subsets, n1), np.float64)
        mask2 = np.zeros((num_subsets, n2), np.float64)
        for s, (idx1, idx2) in enumerate(draws):
            mask1[s, idx1] = 1.0
            mask2[s, idx2] = 1.0
        sum_xx, diag_xx = _masked_kernel_sums(features1, features1, mask1, mask1, kernel, same=True)
        sum_yy, diag_yy = _masked_kernel_sums(features2, features2, mask2, mask2, kernel, same=True)
        sum_xy, _ = _masked_kernel_sums(features1, features2, mask1, mask2, kernel, same=False)
        mmds = _mmd2_unbiased(sum_xx, diag_xx, sum_yy, diag_yy, sum_xy, m)
    else:
        mmds = np.empty(num_subsets, np.float64)
        for s, (idx1, idx2) in enumerate(draws):
            x, y = features1[idx1], features2[idx2]
            kxx, kyy = kernel(x, x), kernel(y, y)
            mmds[s] = _mmd2_unbiased(kxx.sum(), np.trace(kxx), kyy.sum(), np.trace(kyy), kernel(x, y).sum(), m)
    return KernelInceptionDistance(float(mmds.mean()), float(mmds.std()), m)


# ------------------------------------------------------------------------------------ statistics file

@dataclasses.dataclass(frozen=True, eq=False)  # arrays: no elementwise __eq__
class Statistics:
    """The contents of a statistics file: `mu [D]` and `sigma [D, D]` (float64), optionally the features
    `[N, D]` (float32) they came from, and metadata (protocol, n, source...; `{}` when the file has none)."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


def _validated(mu, sigma, features, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """float64 mu/sigma and float32 features after the shape and finiteness checks; ValueError naming `where`."""
    arrays = {"mu": mu, "sigma": sigma} if features is None else {"mu": mu, "sigma": sigma, "features": features}
    for name, array in arrays.items():
        array = np.asarray(array)
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{where}: {name} has dtype {array.dtype}, expected real numbers")
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{where}: expected mu [D] and sigma [D, D], got mu {list(mu.shape)} "
                         f"and sigma {list(sigma.shape)}")
    if features is not None:
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != mu.shape[0]:
            raise ValueError(f"{where}: expected features [N, {mu.shape[0]}], got {list(features.shape)}")
    for name, array in (("mu", mu), ("sigma", sigma), ("features", features)):
        if array is not None and not np.all(np.isfinite(array)):
            raise ValueError(f"{where}: {name} contains non-finite values")
    return mu, sigma, features


def save_statistics(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, *,
                    features: np.ndarray | None = None, metadata: dict[str, Any] | None = None) -> Path:
    """Writes `mu`, `sigma` (and `features`, `metadata`) as an `.npz` that pytorch-fid can read; returns the path.

    As `np.savez` (and hence pytorch-fid's `--save-stats`) does, `.npz` is appended to a path without it.
    Arrays: `mu` float64 `[D]`, `sigma` float64 `[D, D]`, optional `features` float32 `[N, D]`, optional
    `metadata` a JSON string stored as a 0-d unicode array (never a pickled object). The write is atomic: a
    temporary file in the same folder, renamed over `path` once complete.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    mu, sigma, features = _validated(mu, sigma, features, str(path))
    arrays: dict[str, np.ndarray] = {"mu": mu, "sigma": sigma}
    if features is not None:
        arrays["features"] = features
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise ValueError(f"{path}: metadata must be a dict, got {type(metadata).__name__}")
        arrays["metadata"] = np.array(json.dumps(metadata, sort_keys=True))  # 0-d '<U…' array

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:  # a file object, so np.savez adds no suffix to the temporary name
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def load_statistics(path: str | os.PathLike) -> Statistics:
    """Reads a statistics `.npz` (this module's, or pytorch-fid's with only `mu` and `sigma`).

    Never unpickles (`allow_pickle=False`). A file that is not an npz, is corrupt, lacks `mu` or `sigma`,
    holds arrays of the wrong shapes or non-finite values, or pickled objects, gives a one-line ValueError
    naming the file. A missing file gives FileNotFoundError.
    """
    where = str(path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:  # not numpy, pickled, or truncated
        raise ValueError(f"{where}: not a readable .npz ({_one_line(error)})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{where}: a single .npy array, not an .npz archive with mu and sigma")
    with data:
        missing = [name for name in ("mu", "sigma") if name not in data.files]
        if missing:
            raise ValueError(f"{where}: no {' or '.join(missing)} array "
                             f"(the file holds: {', '.join(data.files) or 'nothing'})")
        try:
            mu, sigma = np.asarray(data["mu"]), np.asarray(data["sigma"])  # shapes checked below
            features = np.asarray(data["features"]) if "features" in data.files else None
            metadata_text = str(data["metadata"][()]) if "metadata" in data.files else None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:  # object arrays, corrupt members
            raise ValueError(f"{where}: unreadable array ({_one_line(error)})") from None
    mu, sigma, features = _validated(mu, sigma, features, where)
    metadata: dict[str, Any] = {}
    if metadata_text is not None:
        try:
            metadata = json.loads(metadata_text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: metadata is not valid JSON ({error})") from None
        if not isinstance(metadata, dict):
            raise ValueError(f"{where}: metadata is JSON but not an object")
    return Statistics(mu=mu, sigma=sigma, features=features, metadata=metadata)
