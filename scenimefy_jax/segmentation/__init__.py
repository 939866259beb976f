"""Semantic segmentation (ADE20K-150) with the ported Mask2Former: the `Segmenter` API and the segment job.

`from scenimefy_jax.segmentation import Segmenter` (see `segmenter.py`); class names and palette in
`ade20k.py`.
"""
from __future__ import annotations


def __getattr__(name):  # lazy, so that `segmentation.ade20k` does not import JAX models
    if name in ("Segmenter", "sem_seg_function", "random_segmenter"):
        from scenimefy_jax.segmentation import segmenter

        return getattr(segmenter, name)
    raise AttributeError(name)


__all__ = ["Segmenter", "sem_seg_function", "random_segmenter"]
