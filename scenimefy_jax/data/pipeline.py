"""The training input pipeline (docs/reference.md §2.2) on grain: deterministic, resumable, sharded per host.

What one training item holds, for global item position `t` (item `t` of the whole run):

* `x`:   unpaired photo. Within epoch `e = t // epoch_items` the official loader visits a fresh
         permutation of `range(max(|A|, |B|))` and reads photo `index % |A|` (every photo once an epoch
         when |A| >= |B|); `epoch_items` drops the last partial global batch (`drop_last=True`).
* `y`:   unpaired anime, drawn uniformly **with replacement**, independently per item (official).
* `x_p`, `y_p`: a pseudo pair. The official paired loader is its own shuffled loader, re-created at the
         start of every epoch and restarted when exhausted: item `o` of an epoch reads pair
         `perm_{e, o // P'}[o % P']` where `P'` is the pair count rounded down to the global batch.

All randomness (permutations, the anime draws, the flips) is a pure function of `(seed, t)`, so the
stream is the same for any number of worker processes, and restarting the iterator from its saved
state continues it exactly. Transforms: bicubic resize to `image_size x image_size` (both sides, as
the official `Resize((256, 256))`), horizontal flip with p = 0.5 for the unpaired images only (the
official code never flips pairs), then ToTensor + Normalize(0.5, 0.5) to [-1, 1], NHWC float32.

Several hosts: host `h` of `H` takes the items `t = h, h + H, h + 2H, ...` (`jax.process_index()`),
so its k-th local batch of `B / H` items and the other hosts' k-th local batches together are exactly
global batch k. Decoding runs in `num_workers` worker processes (grain `mp_prefetch`).

A file that cannot be decoded is logged once by name and its whole item (x, y, x_p, y_p) is skipped;
batching then takes the next item, which keeps the stream deterministic. `SkipUnreadable` does the
skipping and counts: each batch row says how many items were dropped before it (`"skipped"`), and more
than `max_unreadable_in_a_row` dropped in a row (a folder of corrupt files, a broken mount) raises
`UnreadableDataError` naming the folders instead of searching the infinite stream for a readable item.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import logging as py_logging
import os
from typing import Any, Protocol, Sequence

import grain
import numpy as np
from PIL import Image

from scenimefy_jax.data import folders, images, workers

_log = py_logging.getLogger(__name__)
BATCH_KEYS = ("x", "y", "x_p", "y_p")
MAX_UNREADABLE_IN_A_ROW = 100  # default of make_train_dataset and single_domain.make_dataset


class UnreadableDataError(RuntimeError):
    """Too many training items in a row had an image that could not be read: the data is broken."""


class ImageSource(Protocol):
    """Random access to a list of images, each with a name used in error messages."""

    def __len__(self) -> int: ...

    def name(self, index: int) -> str: ...

    def load(self, index: int) -> np.ndarray:
        """`[H, W, 3] uint8` RGB; raises `images.ImageReadError` naming the file if unreadable."""
        ...


@dataclasses.dataclass(frozen=True)
class FolderSource:
    """Image files on disk, decoded with `images.load_image` (EXIF orientation, 16-bit, palettes...)."""

    paths: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return self.paths[index]

    def load(self, index: int) -> np.ndarray:
        return images.load_image(self.paths[index])


class RecordSource:
    """One split of a packed data set (`tools/build_dataset.py`): records `{"image": PNG, "name"}`.

    The packer already applied `images.load_image`'s conversions, so the stored PNG is plain 8-bit RGB.
    Opening is deferred to first use so that the object pickles cheaply into worker processes.
    """

    def __init__(self, data_dir: str, split: str):
        self.data_dir, self.split = os.fspath(data_dir), split
        self._source = None
        self._length = len(self._open())

    def _open(self):
        if self._source is None:
            import tensorflow_datasets as tfds  # imported lazily: only packed data sets need it

            self._source = tfds.builder_from_directory(self.data_dir).as_data_source(split=self.split)
        return self._source

    def __getstate__(self):
        return {"data_dir": self.data_dir, "split": self.split, "_length": self._length, "_source": None}

    def __len__(self) -> int:
        return self._length

    def _record(self, index: int) -> dict:
        return self._open()[index]

    def name(self, index: int) -> str:
        try:
            name = self._record(index)["name"]
        except Exception:  # noqa: BLE001 - a broken record still needs a name for the log
            name = b"?"
        return f"{self.data_dir}[{self.split}][{index}] {name.decode() if isinstance(name, bytes) else name}"

    def load(self, index: int) -> np.ndarray:
        try:
            record = self._record(index)
            with Image.open(io.BytesIO(record["image"])) as img:
                arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except Exception as e:  # noqa: BLE001 - any failure to read a record is a corrupt image
            raise images.ImageReadError(f"{self.name(index)}: not a readable record ({type(e).__name__}: {e})") from e
        return arr


@dataclasses.dataclass(frozen=True)
class TrainSources:
    """The four image lists of a semi-supervised translation data set."""

    photos: ImageSource
    anime: ImageSource
    pair_photos: ImageSource
    pair_anime: ImageSource

    def __post_init__(self):
        if len(self.pair_photos) != len(self.pair_anime):
            raise folders.DatasetLayoutError(
                f"paired data: {len(self.pair_photos)} photos but {len(self.pair_anime)} anime images"
            )

    @property
    def epoch_length(self) -> int:
        """Official `UnalignedDataset.__len__`: max(|A|, |B|)."""
        return max(len(self.photos), len(self.anime))


def folder_sources(unpaired_root: str, paired_root: str) -> TrainSources:
    """Sources for the official folder layout (`unpaired_root/trainA|trainB`, `paired_root/trainA|trainB`)."""
    photos, anime = folders.unpaired_files(unpaired_root)
    pair_photos, pair_anime = folders.paired_files(paired_root)
    return TrainSources(
        FolderSource(tuple(photos)), FolderSource(tuple(anime)),
        FolderSource(tuple(pair_photos)), FolderSource(tuple(pair_anime)),
    )


def record_sources(data_dir: str) -> TrainSources:
    """Sources for a data set packed by `tools/build_dataset.py`."""
    return TrainSources(*(RecordSource(data_dir, split) for split in ("photos", "anime", "pair_photos", "pair_anime")))


@dataclasses.dataclass(frozen=True)
class ItemPlan:
    """Maps a global item position to the indices and flips of that item (pure function of the seed)."""

    seed: int
    epoch_length: int  # max(|A|, |B|)
    n_photos: int
    n_anime: int
    n_pairs: int
    global_batch: int
    flip: bool = True  # official `no_flip=False` for the unpaired branch

    def __post_init__(self):
        if self.epoch_items <= 0:
            raise ValueError(
                f"global batch {self.global_batch} is larger than the unpaired data set ({self.epoch_length} items)"
            )
        if self.pair_cycle <= 0:
            raise ValueError(f"global batch {self.global_batch} is larger than the paired data set ({self.n_pairs} pairs)")

    @property
    def epoch_items(self) -> int:
        """Items per epoch: the official `drop_last=True` at the global batch size."""
        return (self.epoch_length // self.global_batch) * self.global_batch

    @property
    def steps_per_epoch(self) -> int:
        return self.epoch_items // self.global_batch

    @property
    def pair_cycle(self) -> int:
        return (self.n_pairs // self.global_batch) * self.global_batch

    @functools.lru_cache(maxsize=4)
    def _photo_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 1]).permutation(self.epoch_length)

    @functools.lru_cache(maxsize=4)
    def _pair_order(self, epoch: int, cycle: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, cycle, 2]).permutation(self.n_pairs)

    def __call__(self, position: int) -> dict[str, int]:
        position = int(position)
        epoch, offset = divmod(position, self.epoch_items)
        cycle, pair_offset = divmod(offset, self.pair_cycle)
        rng = np.random.default_rng([self.seed, position, 3])
        anime, flip_x, flip_y = int(rng.integers(self.n_anime)), bool(rng.integers(2)), bool(rng.integers(2))
        return {
            "position": position,
            "photo": int(self._photo_order(epoch)[offset]) % self.n_photos,
            "anime": anime,
            "pair": int(self._pair_order(epoch, cycle)[pair_offset]),
            "flip_x": flip_x and self.flip,
            "flip_y": flip_y and self.flip,
        }


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """`[H, W, 3] uint8` -> `[size, size, 3] uint8`, bicubic on both sides (the official load_size resize)."""
    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))
    return image


def prepare(image: np.ndarray, size: int, flip: bool) -> np.ndarray:
    """`[H, W, 3] uint8` -> `[size, size, 3]` float32 in [-1, 1]: bicubic resize, optional h-flip."""
    image = resize_square(image, size)
    if flip:
        image = image[:, ::-1]
    return np.ascontiguousarray(images.to_model_input(image))


def location(source: ImageSource, index: int) -> str:
    """Where image `index` of `source` lives, for messages: its folder, or the packed data set's split."""
    if isinstance(source, FolderSource):
        return os.path.dirname(source.paths[index])
    if isinstance(source, RecordSource):
        return f"{source.data_dir} [{source.split}]"
    return source.name(index)


class ReadOnce:
    """`source.load(index)`, or None for an unreadable image: logged once per file (per process), and
    its location and error appended to `problems` (what an unreadable item carries, `unreadable_item`)."""

    def __init__(self):
        self._reported: set[str] = set()

    def __call__(self, source: ImageSource, index: int, problems: list[tuple[str, str]]) -> np.ndarray | None:
        try:
            return source.load(index)
        except (images.ImageReadError, OSError, ValueError) as e:
            name = source.name(index)
            if name not in self._reported:
                self._reported.add(name)
                _log.warning("skipping an unreadable training image: %s", e)
            problems.append((location(source, index), " ".join(str(e).split())))
            return None


def unreadable_item(position: int, problems: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The stand-in for an item with unreadable images; `SkipUnreadable` drops and counts it."""
    return {"valid": False, "position": position, "unreadable": [where for where, _ in problems],
            "error": problems[0][1]}


@dataclasses.dataclass
class LoadItem:
    """Reads and transforms one planned item; an `unreadable_item` (each bad file logged once) if any
    image cannot be read."""

    sources: TrainSources
    image_size: int

    def __post_init__(self):
        self._read = ReadOnce()

    def __call__(self, item: dict[str, int]) -> dict[str, Any]:
        s, problems = self.sources, []
        raw = (
            self._read(s.photos, item["photo"], problems),
            self._read(s.anime, item["anime"], problems),
            self._read(s.pair_photos, item["pair"], problems),
            self._read(s.pair_anime, item["pair"], problems),
        )
        if problems:
            return unreadable_item(item["position"], problems)
        x, y, x_p, y_p = raw
        return {
            "valid": True,
            "position": item["position"],
            "x": prepare(x, self.image_size, item["flip_x"]),
            "y": prepare(y, self.image_size, item["flip_y"]),
            "x_p": prepare(x_p, self.image_size, False),  # pairs are never flipped (official)
            "y_p": prepare(y_p, self.image_size, False),
        }


class SkipUnreadable(grain.IterDataset):
    """Drops the unreadable items (`"valid": False`) of `parent`, counting them.

    Each kept item gets `"skipped"`: how many items were dropped right before it. More than
    `max_in_a_row` dropped in a row raises `UnreadableDataError`, naming the folders of those items
    and the number skipped so far; the stream is infinite (epochs repeat), so a data set smaller than
    the limit stops too. Applied in the training process after the decoding workers, so the counts
    depend on the stream alone, not on `num_workers`. They are not part of the iterator's saved state:
    a restored iterator starts them at zero, which for the in-a-row count is exact (states are saved
    between batches, just after a kept item); the total then counts from the restore.
    """

    def __init__(self, parent: grain.IterDataset, *, max_in_a_row: int):
        super().__init__(parent)
        if int(max_in_a_row) < 0:
            raise ValueError(f"max_unreadable_in_a_row must be >= 0 (0: stop at the first unreadable item), "
                             f"got {max_in_a_row}")
        self.max_in_a_row = int(max_in_a_row)

    def __iter__(self) -> "_SkipUnreadableIterator":
        return _SkipUnreadableIterator(self._parent.__iter__(), self.max_in_a_row)

    def __str__(self) -> str:
        return f"SkipUnreadable(max_in_a_row={self.max_in_a_row})"


class _SkipUnreadableIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, max_in_a_row: int):
        super().__init__(parent)
        self._max = max_in_a_row
        self._in_a_row = 0
        self._skipped = 0  # since this iterator started (or was restored)
        self._where: dict[str, None] = {}  # folders of the current run of unreadable items, in order
        self._error = ""  # the first error of that run

    def __next__(self) -> dict[str, Any]:
        while True:
            element = next(self._parent)
            if element["valid"]:
                kept = dict(element, skipped=self._in_a_row)
                self._in_a_row, self._where, self._error = 0, {}, ""
                return kept
            self._in_a_row += 1
            self._skipped += 1
            self._where.update(dict.fromkeys(element["unreadable"]))
            self._error = self._error or element["error"]
            if self._in_a_row > self._max:
                raise UnreadableDataError(self._message())

    def _message(self) -> str:
        where = list(self._where)
        shown = ", ".join(where[:4]) + (f" and {len(where) - 4} more folders" if len(where) > 4 else "")
        return (f"unreadable training data in {shown}: {self._in_a_row} items in a row had an image that could "
                f"not be read (more than max_unreadable_in_a_row={self._max}; {self._skipped} items skipped since "
                f"the stream started or resumed), e.g. {self._error}")

    def get_state(self) -> dict[str, Any]:
        return self._parent.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state)
        self._in_a_row, self._skipped, self._where, self._error = 0, 0, {}, ""


def _stack(elements: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    batch = {k: np.stack([e[k] for e in elements]) for k in BATCH_KEYS}
    batch["position"] = np.asarray([e["position"] for e in elements], np.int64)
    batch["skipped"] = np.asarray([e["skipped"] for e in elements], np.int64)
    return batch


def make_train_dataset(
    sources: TrainSources,
    *,
    image_size: int,
    global_batch: int,
    seed: int,
    num_workers: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    flip: bool = True,
    max_unreadable_in_a_row: int = MAX_UNREADABLE_IN_A_ROW,
) -> tuple[grain.IterDataset, ItemPlan]:
    """The infinite training stream of this host's batches, and the plan it follows.

    Each element is `{"x", "y", "x_p", "y_p": [B_local, S, S, 3] float32 in [-1, 1], "position": [B_local],
    "skipped": [B_local]}` with `B_local = global_batch / process_count` (`skipped`: unreadable items
    dropped before each row). Iterate with `iter(dataset)`; the iterator's `get_state()` / `set_state()`
    (or `grain.checkpoint.CheckpointSave`) make it resumable. More than `max_unreadable_in_a_row` items
    of this host in a row with an unreadable image raise `UnreadableDataError` from `next`.
    """
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    if global_batch % process_count:
        raise ValueError(f"global batch {global_batch} is not divisible by the {process_count} hosts")
    plan = ItemPlan(
        seed=seed, epoch_length=sources.epoch_length, n_photos=len(sources.photos), n_anime=len(sources.anime),
        n_pairs=len(sources.pair_photos), global_batch=global_batch, flip=flip,
    )
    # Positions up to 2**62: "infinite" for any run, still a valid length for grain.
    positions = grain.MapDataset.range(2**62)[process_index::process_count]
    dataset = positions.map(plan).map(LoadItem(sources, image_size)).to_iter_dataset()
    if num_workers > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's worker options are absl flags; library use parses none
            flags.FLAGS.mark_as_parsed()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=2),
                                      worker_init_fn=workers.parent_watch())
    # Skipping and batching happen after the workers so the stream does not depend on `num_workers`.
    dataset = SkipUnreadable(dataset, max_in_a_row=max_unreadable_in_a_row).batch(
        global_batch // process_count, drop_remainder=True, batch_fn=_stack)
    return dataset, plan
