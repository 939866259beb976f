"""`Segmenter`: ADE20K-150 semantic segmentation with Mask2Former, as Scenimefy's selection uses it.

    from scenimefy_jax.segmentation import Segmenter
    segmenter = Segmenter.from_checkpoint("model_final_503e96.pkl")   # or a converted / HF folder
    scores = segmenter.sem_seg(images)    # [B, H, W, 3] float RGB, 0..255 -> [B, H, W, 150] float32
    labels = segmenter.labels(images)     # -> [B, H, W] int32 (argmax)

`sem_seg` equals detectron2's `sem_seg` output for the same input at the same size (channels last):
the official selection feeds the 256x256 StyleGAN images unresized (docs/reference.md §3.4), so no
resizing happens here either; images are normalised, zero-padded to multiples of 32, segmented, and
the scores cropped back (docs/reference.md §5.2). One jitted program serves each input shape; batches
are split over every local device on the data axis of the shared mesh (parameters replicated); a
short last batch is padded with blank images to a power of two (and a multiple of the device count),
so a stream of images compiles a few batch sizes only.

For use inside a larger jitted computation (the pseudo-pair job), `segmenter.sem_seg_fn` is the pure
function `(params, images) -> scores` and `segmenter.params` its replicated parameters.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scenimefy_jax import model_io
from scenimefy_jax.models.mask2former.model import (
    Mask2Former,
    Mask2FormerConfig,
    normalize_and_pad,
    semantic_segmentation,
)
from scenimefy_jax.parallel import mesh as mesh_lib

KIND = "mask2former"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def sem_seg_function(config: Mask2FormerConfig, dtype: Any = jnp.float32):
    """The pure `(params, images [B, H, W, 3] 0..255) -> sem_seg [B, H, W, K]` of a Mask2Former."""
    model = Mask2Former(config, dtype=dtype)

    def sem_seg(params, images):
        _, h, w, _ = images.shape
        class_logits, mask_logits = model.apply({"params": params}, normalize_and_pad(images))
        return semantic_segmentation(class_logits, mask_logits, (h, w))

    return sem_seg


class Segmenter:
    """A Mask2Former semantic segmenter on the local devices.

    Args:
      params: the `Mask2Former` parameter tree (from a converter or `model_io`).
      config: its `Mask2FormerConfig` (or the architecture dict a converter records).
      dtype: "float32" (default; matches the official scores to float32 rounding) or "bfloat16"
        (faster on TPU/GPU; scores differ by ~1e-2, labels rarely).
      batch_size: most images run at once when `sem_seg` / `labels` get a larger batch.
    """

    def __init__(self, params, config: Mask2FormerConfig | dict | None = None, *, dtype: str = "float32",
                 batch_size: int = 8):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(config, dict):
            config = Mask2FormerConfig.from_dict(config)
        self.config = config or Mask2FormerConfig()
        self.dtype = dtype
        self.batch_size = batch_size
        self.mesh = mesh_lib.make_mesh(jax.local_devices())
        replicated, sharded = mesh_lib.replicated(self.mesh), mesh_lib.data_sharded(self.mesh)
        self.params = jax.device_put(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params), replicated)
        self.sem_seg_fn = sem_seg_function(self.config, DTYPES[dtype])
        self._sem_seg = jax.jit(self.sem_seg_fn, in_shardings=(replicated, sharded), out_shardings=sharded)
        self._labels = jax.jit(lambda p, x: jnp.argmax(self.sem_seg_fn(p, x), axis=-1).astype(jnp.int32),
                               in_shardings=(replicated, sharded), out_shardings=sharded)

    @property
    def num_classes(self) -> int:
        return self.config.num_labels

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs) -> "Segmenter":
        """A converted model directory, a detectron2 `.pkl`, a Hugging Face folder, or a state dict file."""
        path = os.fspath(path)
        if model_io.is_saved_model(path):
            saved = model_io.load_model(path, expected_kind=KIND)
            arch = dict(saved.metadata.get("architecture") or {})
            arch.pop("model", None)
            return cls(saved.params, Mask2FormerConfig.from_dict(arch), **kwargs)
        from scenimefy_jax.convert import mask2former as convert_mask2former

        converted = convert_mask2former.load_checkpoint(path)
        arch = dict(converted.architecture)
        arch.pop("model", None)
        return cls(converted.params, Mask2FormerConfig.from_dict(arch), **kwargs)

    def _run(self, fn, images) -> np.ndarray:
        images = np.asarray(images, np.float32)
        single = images.ndim == 3
        if single:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected images [B, H, W, 3] (RGB, 0..255), got shape {images.shape}")
        outputs = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            n = len(chunk)
            padded = mesh_lib.padded_batch_size(n, self.batch_size, self.mesh.size)
            if padded > n:  # blank images: a few compiled batch sizes, equal slices for every device
                chunk = np.concatenate([chunk, np.zeros((padded - n, *chunk.shape[1:]), np.float32)])
            outputs.append(np.asarray(fn(self.params, mesh_lib.local_batch(chunk, self.mesh)))[:n])
        out = np.concatenate(outputs)
        return out[0] if single else out

    def sem_seg(self, images) -> np.ndarray:
        """`[B, H, W, 3]` (or `[H, W, 3]`) float RGB on the 0..255 scale -> `[B, H, W, K]` float32 scores."""
        return self._run(self._sem_seg, images)

    def labels(self, images) -> np.ndarray:
        """The argmax class of `sem_seg` per pixel, `[B, H, W]` int32."""
        return self._run(self._labels, images)


@functools.lru_cache(maxsize=None)
def _tiny_config() -> Mask2FormerConfig:
    return Mask2FormerConfig(embed_dim=16, depths=(2, 2, 2, 2), swin_heads=(1, 2, 2, 4), window_size=4,
                             feature_size=32, mask_feature_size=32, encoder_layers=1, encoder_feedforward_dim=64,
                             hidden_dim=32, num_queries=8, decoder_layers=3, dim_feedforward=64)


def random_segmenter(config: Mask2FormerConfig | None = None, seed: int = 0, **kwargs) -> Segmenter:
    """A randomly initialised segmenter (default: a tiny architecture), for demos, tests and benchmarks."""
    from scenimefy_jax.models.mask2former.model import init_params

    config = config or _tiny_config()
    return Segmenter(init_params(config, seed), config, **kwargs)
