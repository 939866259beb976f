"""One folder of images as a training stream: the anime data of StyleGAN fine-tuning (docs/reference.md §4.2).

The official fine-tuning reads a Cartoon-StyleGAN LMDB built by `prepare_data.py` (shorter side
resized to the resolution with LANCZOS, centre crop, stored as JPEG quality 100) and applies
RandomHorizontalFlip -> ToTensor -> Normalize(0.5, 0.5) when training. Here the folder is read
directly: `prepare_square` does the resize + centre crop (LANCZOS, as `prepare_data.py`; the JPEG
round trip is not reproduced), then the flip and the mapping to [-1, 1].

Order: a fresh permutation of the images every epoch (the official shuffled sampler, `drop_last`
at the global batch); the flip of item `t` is a pure function of `(seed, t)`. As in
`data/pipeline.py` (whose image sources, decoding and skipping of unreadable files this module
reuses), the stream is identical for any number of workers, is sharded per host, and resumes exactly
from its saved iterator state.
"""
from __future__ import annotations

import dataclasses
import functools
import logging as py_logging
from typing import Any, Sequence

import grain
import numpy as np
from PIL import Image

from scenimefy_jax.data import folders, images, pipeline, workers

_log = py_logging.getLogger(__name__)
BATCH_KEYS = ("real",)


def folder_source(folder: str) -> pipeline.FolderSource:
    """Every image below `folder` (recursive, official extensions, sorted); at least one."""
    paths = folders.list_images(folder)
    if not paths:
        raise folders.DatasetLayoutError(f"{folder}: no images found")
    return pipeline.FolderSource(tuple(paths))


def prepare_square(image: np.ndarray, size: int, flip: bool) -> np.ndarray:
    """`[H, W, 3] uint8` -> `[size, size, 3]` float32 in [-1, 1]: shorter side to `size` (LANCZOS),
    centre crop, optional horizontal flip (Cartoon-StyleGAN `prepare_data.py` + training transform)."""
    h, w = image.shape[:2]
    if (h, w) != (size, size):
        # torchvision Resize(int): shorter side -> size, longer side -> int(size * long / short).
        if h <= w:
            nh, nw = size, int(size * w / h)
        else:
            nh, nw = int(size * h / w), size
        img = Image.fromarray(image).resize((nw, nh), Image.Resampling.LANCZOS)
        # torchvision CenterCrop offsets: round((n - size) / 2).
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        image = np.asarray(img)[top : top + size, left : left + size]
    if flip:
        image = image[:, ::-1]
    return np.ascontiguousarray(images.to_model_input(image))


@dataclasses.dataclass(frozen=True)
class SinglePlan:
    """Global item position -> (image index, flip); pure function of the seed."""

    seed: int
    n_images: int
    global_batch: int
    flip: bool = True

    def __post_init__(self):
        if self.epoch_items <= 0:
            raise ValueError(f"global batch {self.global_batch} is larger than the data set ({self.n_images} images)")

    @property
    def epoch_items(self) -> int:
        return (self.n_images // self.global_batch) * self.global_batch

    @property
    def steps_per_epoch(self) -> int:
        return self.epoch_items // self.global_batch

    @functools.lru_cache(maxsize=4)
    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 11]).permutation(self.n_images)

    def __call__(self, position: int) -> dict[str, int]:
        position = int(position)
        epoch, offset = divmod(position, self.epoch_items)
        flip = bool(np.random.default_rng([self.seed, position, 12]).integers(2))
        return {"position": position, "index": int(self._order(epoch)[offset]), "flip": flip and self.flip}


@dataclasses.dataclass
class LoadSingle:
    source: pipeline.ImageSource
    image_size: int

    def __post_init__(self):
        self._read = pipeline.ReadOnce()

    def __call__(self, item: dict[str, int]) -> dict[str, Any]:
        problems = []
        raw = self._read(self.source, item["index"], problems)
        if problems:
            return pipeline.unreadable_item(item["position"], problems)
        return {"valid": True, "position": item["position"],
                "real": prepare_square(raw, self.image_size, item["flip"])}


def _stack(elements: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {"real": np.stack([e["real"] for e in elements]),
            "position": np.asarray([e["position"] for e in elements], np.int64),
            "skipped": np.asarray([e["skipped"] for e in elements], np.int64)}


def make_dataset(
    source: pipeline.ImageSource,
    *,
    image_size: int,
    global_batch: int,
    seed: int,
    flip: bool = True,
    num_workers: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    max_unreadable_in_a_row: int = pipeline.MAX_UNREADABLE_IN_A_ROW,
) -> tuple[grain.IterDataset, SinglePlan]:
    """Infinite stream of this host's batches `{"real": [B_local, S, S, 3] in [-1, 1], "position", "skipped"}`;
    more than `max_unreadable_in_a_row` unreadable images in a row raise `pipeline.UnreadableDataError`."""
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    if global_batch % process_count:
        raise ValueError(f"global batch {global_batch} is not divisible by the {process_count} hosts")
    plan = SinglePlan(seed=seed, n_images=len(source), global_batch=global_batch, flip=flip)
    positions = grain.MapDataset.range(2**62)[process_index::process_count]
    dataset = positions.map(plan).map(LoadSingle(source, image_size)).to_iter_dataset()
    if num_workers > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=2),
                                      worker_init_fn=workers.parent_watch())
    dataset = pipeline.SkipUnreadable(dataset, max_in_a_row=max_unreadable_in_a_row).batch(
        global_batch // process_count, drop_remainder=True, batch_fn=_stack)
    return dataset, plan
