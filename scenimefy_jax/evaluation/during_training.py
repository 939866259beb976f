"""FID and KID of a generator while it trains: a fixed held-out photo set, translated by the current
parameters every N steps, measured against the anime set (the i2i job's `eval` options).

The reference features are computed once when training starts (and kept in the features cache when the
network is a real weights file); each evaluation translates the same photos, turns the outputs into
8-bit images as the translate job would save them, and measures them with the same protocol as the
evaluate job, so a number logged during training and one from `configs/evaluate.py` on the exported
translator agree for the same photos, size and reference set.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
from absl import logging

from scenimefy_jax.data import images as image_ops
from scenimefy_jax.evaluation import features as features_lib
from scenimefy_jax.evaluation import metrics
from scenimefy_jax.parallel import distributed


@dataclasses.dataclass
class GeneratorEvaluator:
    """`evaluator(generate) -> {"eval/fid", "eval/kid_mean", "eval/kid_std"}`.

    inception:  the FID network (`features.InceptionFeatures`).
    photos:     `[N, S, S, 3]` uint8 held-out photos at the size the generator is trained at.
    reference:  statistics of the anime set, with features (KID needs them).
    generate:   (passed per call) `[B, S, S, 3]` float32 in [-1, 1] -> the generator's `[B, S, S, 3]`.
    """

    inception: features_lib.InceptionFeatures
    photos: np.ndarray
    reference: metrics.Statistics
    protocol: str = "pytorch_fid"
    batch_size: int = 8
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    kid_seed: int = 2020

    def fakes(self, generate: Callable[[np.ndarray], np.ndarray], indices: Sequence[int] | None = None) -> np.ndarray:
        """The held-out photos (or those at `indices`) translated by `generate`, `[n, S, S, 3]` uint8."""
        photos = self.photos if indices is None else self.photos[np.asarray(indices, np.int64)]
        out = [np.zeros((0, *photos.shape[1:]), np.uint8)]
        for start in range(0, len(photos), self.batch_size):
            chunk = photos[start:start + self.batch_size]
            out.append(image_ops.to_uint8(np.asarray(generate(image_ops.to_model_input(chunk)))))
        return np.concatenate(out)

    def __call__(self, generate: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
        # Several hosts: each translates and measures every process_count-th photo on its own devices;
        # the features come back in photo order (KID's subsets depend on it), as one host has them.
        indices = list(range(len(self.photos)))
        share = distributed.process_share(indices)
        done, feats = features_lib.features_of_images(zip(share, self.fakes(generate, share)), self.inception,
                                                      self.protocol)
        feats = features_lib.gather_in_order(indices, done, feats, {}).features
        if self.reference.features is not None:
            fid = metrics.fid_from_features(feats, self.reference.features)
        else:
            mu, sigma = metrics.feature_statistics(feats)
            fid = metrics.frechet_distance(mu, sigma, self.reference.mu, self.reference.sigma)
        scores = {"eval/fid": float(fid)}
        if self.reference.features is not None:
            kid = metrics.kernel_inception_distance(
                feats, self.reference.features, num_subsets=self.kid_subsets, subset_size=self.kid_subset_size,
                seed=self.kid_seed)
            scores.update({"eval/kid_mean": float(kid.mean), "eval/kid_std": float(kid.std)})
        return scores


def load_reference(spec: str | None, images: Sequence[np.ndarray] | None, inception, *, protocol: str,
                   cache_dir: str | None, workers: int = 2) -> metrics.Statistics:
    """Reference statistics: a statistics `.npz`, a folder of images, or in-memory `images` (spec None)."""
    if spec and spec.endswith(".npz"):
        stats = metrics.load_statistics(spec)
        recorded = (stats.metadata or {}).get("protocol")
        if recorded and recorded != protocol:
            raise ValueError(f"{spec} was measured with protocol {recorded!r}, the evaluation uses {protocol!r}")
        return stats
    if spec:
        from scenimefy_jax.data.image_files import find_inputs

        paths, _ = find_inputs(spec)
        stats, failures, _ = features_lib.cached_folder_statistics(
            paths, inception, protocol=protocol, cache_dir=cache_dir, workers=workers, progress=False)
        for path, reason in failures.items():
            logging.warning("FID reference: skipped %s", reason)
        if stats is None:
            raise ValueError(f"{spec}: fewer than two readable images for the FID reference")
        return stats
    _, feats = features_lib.features_of_images(enumerate(images), inception, protocol)
    if len(feats) < 2:
        raise ValueError("the FID reference needs at least two images")
    mu, sigma = metrics.feature_statistics(feats)
    return metrics.Statistics(mu=mu, sigma=sigma, features=feats, metadata={"protocol": protocol, "n": len(feats)})
