"""`Translator`: photos in, anime scenes out, with the official test-time processing (docs/reference.md §1.7).

    from scenimefy_jax.inference import Translator
    translator = Translator.from_checkpoint("Shinkai_net_G.pth")   # or a converted Orbax directory
    anime = translator(photo)                                       # [H, W, 3] uint8 -> uint8

One jitted forward serves every call; XLA compiles once per input shape and reuses it. Lists are
grouped by size and run in batches whose sizes are rounded up to powers of two (padding with blank
images, whose outputs are discarded), so a folder of mixed photos compiles a handful of programs,
not one per image. With several local devices (a TPU host, a multi-GPU box) each batch is split over
all of them on the data axis of the same mesh the training jobs use; parameters are replicated.
"""
from __future__ import annotations

import collections
import os
from typing import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from scenimefy_jax import model_io
from scenimefy_jax.data import images as image_ops
from scenimefy_jax.models.translator import ResnetGenerator
from scenimefy_jax.parallel import mesh as mesh_lib

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Translator:
    """A translator generator ready to run on the default JAX device.

    Args:
      params: the `ResnetGenerator` parameter tree (as from the converter or a training export).
      architecture: `ResnetGenerator` constructor arguments (`ngf`, `n_blocks`, `output_nc`).
      dtype: "float32" (default, matches the official outputs) or "bfloat16" (faster on TPU/GPU).
      batch_size: most images run through the network at once when a list is translated.
      max_side: if set, photos whose longer side exceeds it are first shrunk (Lanczos) to it; the
        model was trained at 256x256 and InstanceNorm statistics depend on resolution.
      alpha_background: RGB colour that transparent pixels are composited onto (None keeps the stored
        colour under the alpha channel, as the official `.convert("RGB")` does).
    """

    def __init__(
        self,
        params,
        architecture: dict | None = None,
        *,
        dtype: str = "float32",
        batch_size: int = 8,
        max_side: int | None = None,
        alpha_background: Sequence[int] | None = None,
    ):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_side is not None and max_side < 0:
            raise ValueError(f"max_side must be >= 0 (0 or None: off), got {max_side}")
        arch = dict(architecture or {})
        arch.pop("model", None)
        self.architecture = arch
        self.model = ResnetGenerator(dtype=DTYPES[dtype], **arch)
        self.dtype = dtype
        self.batch_size = batch_size
        self.max_side = max_side or None
        self.alpha_background = alpha_background
        self.mesh = mesh_lib.make_mesh(jax.local_devices())
        replicated, sharded = mesh_lib.replicated(self.mesh), mesh_lib.data_sharded(self.mesh)
        self.params = jax.device_put(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params), replicated)
        self._forward = jax.jit(
            lambda p, x: self.model.apply({"params": p}, x),
            in_shardings=(replicated, sharded),
            out_shardings=sharded,
        )

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs) -> "Translator":
        """Loads an Orbax directory written by the converter/training, or an official `*_net_G.pth`."""
        path = os.fspath(path)
        if os.path.isdir(path):
            saved = model_io.load_model(path, expected_kind="translator")
            return cls(saved.params, saved.metadata.get("architecture"), **kwargs)
        from scenimefy_jax.convert import convert_file

        converted = convert_file(path, kind="translator")
        return cls(converted.params, converted.architecture, **kwargs)

    # -- arrays in [-1, 1] ----------------------------------------------------------------------
    def translate_array(self, x: np.ndarray | jax.Array) -> jax.Array:
        """`[B, H, W, 3]` float in [-1, 1] (H, W multiples of 4) -> `[B, H, W, 3]` float32 in [-1, 1]."""
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected [B, H, W, 3], got {x.shape}")
        if x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(f"height and width must be multiples of 4 (see round_to_base4), got {x.shape[1:3]}")
        n, devices = x.shape[0], self.mesh.size
        if n % devices:  # every device takes an equal slice; pad with blank images
            x = jnp.concatenate([jnp.asarray(x, jnp.float32), jnp.zeros((devices - n % devices,) + x.shape[1:])])
        return self._forward(self.params, mesh_lib.local_batch(jnp.asarray(x, jnp.float32), self.mesh))[:n]

    # -- uint8 images ---------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray, name: str = "image") -> np.ndarray:
        """`[H, W, C] uint8` -> `[H', W', 3] uint8` at the size the network will see."""
        image = image_ops.as_rgb_uint8(image, name)
        image = image_ops.limit_side(image, self.max_side)
        return image_ops.round_to_base4(image, name)

    def translate_prepared(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Translates images already passed through `preprocess`, all of one size."""
        outputs: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            chunk = np.stack(images[start : start + self.batch_size])
            n = len(chunk)
            padded = mesh_lib.padded_batch_size(n, self.batch_size, self.mesh.size)
            x = image_ops.to_model_input(chunk)
            if padded > n:
                x = np.concatenate([x, np.zeros((padded - n,) + x.shape[1:], x.dtype)])
            y = np.asarray(self.translate_array(x))[:n]
            outputs.extend(image_ops.to_uint8(y))
        return outputs

    def translate_many(self, items: Iterable[tuple[object, np.ndarray]]) -> Iterator[tuple[object, np.ndarray]]:
        """Streams `(key, image)` pairs to `(key, anime)` pairs, batching equal sizes together.

        Images wait in a per-size bucket until it holds `batch_size` of them (or the input ends), so
        memory stays bounded by the number of distinct sizes times the batch size. Output order
        follows batch completion, not input order.
        """
        buckets: dict[tuple[int, ...], list[tuple[object, np.ndarray]]] = collections.defaultdict(list)
        for key, image in items:
            prepared = self.preprocess(image, str(key))
            bucket = buckets[prepared.shape]
            bucket.append((key, prepared))
            if len(bucket) == self.batch_size:
                yield from self._flush(bucket)
                bucket.clear()
        for bucket in buckets.values():
            if bucket:
                yield from self._flush(bucket)

    def _flush(self, bucket):
        keys = [k for k, _ in bucket]
        return zip(keys, self.translate_prepared([im for _, im in bucket]))

    def __call__(self, images):
        """One `[H, W, C] uint8` image -> its translation; a list -> a list, in input order."""
        if isinstance(images, np.ndarray) and images.ndim in (2, 3):
            return self.translate_prepared([self.preprocess(images)])[0]
        images = list(images)
        results: list[np.ndarray | None] = [None] * len(images)
        for index, output in self.translate_many(enumerate(images)):
            results[index] = output
        return results
