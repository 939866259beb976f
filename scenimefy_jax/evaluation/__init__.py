"""Evaluation: FID and KID of translated images against real anime scenes (docs/reference.md §6.1).

`protocols.py` turns uint8 images into Inception inputs under a named input protocol (`pytorch_fid` or
`clean`), `metrics.py` computes FID and KID from the network's 2048-d pool features and reads and writes
pytorch-fid's `.npz` statistics files. The network is `scenimefy_jax/models/inception.py`.
"""
from scenimefy_jax.evaluation.metrics import (
    FrechetTerms,
    KernelInceptionDistance,
    Statistics,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    frechet_terms,
    kernel_inception_distance,
    load_statistics,
    save_statistics,
)
from scenimefy_jax.evaluation.protocols import INPUT_SIZE, PROTOCOLS, preprocess, preprocess_batch

__all__ = [
    "FrechetTerms", "KernelInceptionDistance", "Statistics", "feature_statistics", "fid_from_features",
    "frechet_distance", "frechet_terms", "kernel_inception_distance", "load_statistics", "save_statistics",
    "INPUT_SIZE", "PROTOCOLS", "preprocess", "preprocess_batch",
]
