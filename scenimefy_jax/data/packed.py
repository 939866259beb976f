"""Packing image folders into a tensorflow-datasets array_record data set (no TensorFlow needed).

tensorflow-datasets installs without TensorFlow and, for array_record files, writes and serves
records in pure Python, as long as every feature avoids TensorFlow codecs: `tfds.features.Image`
encodes with TensorFlow, so images are stored here as opaque PNG bytes (`Tensor(shape=(),
dtype=object)`) plus their relative file name. Each image goes through `images.load_image` (EXIF
orientation, 16-bit and palette conversion) before it is re-encoded as 8-bit RGB PNG, so readers
only need a plain PNG decode (`pipeline.RecordSource`).

Splits: `photos`, `anime` (unpaired), `pair_photos`, `pair_anime` (record i of both is pair i,
checked by file name at packing time). Shuffling is disabled so records keep the sorted file order.
"""
from __future__ import annotations

import io
import multiprocessing
import os

import numpy as np
from PIL import Image

from scenimefy_jax.data import folders, images

SPLITS = ("photos", "anime", "pair_photos", "pair_anime")


def encode_file(args: tuple[str, str, int | None]) -> dict | None:
    """`(path, name, resize)` -> `{"image": PNG bytes, "name": name}`, or None if unreadable."""
    path, name, resize = args
    try:
        arr = images.load_image(path)
    except images.ImageReadError as e:
        return {"error": str(e), "name": name}
    img = Image.fromarray(arr)
    if resize and img.size != (resize, resize):
        # The same bicubic resize the pipeline applies, done once here (then a no-op at training time).
        img = img.resize((resize, resize), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return {"image": buf.getvalue(), "name": name}


def encode_pair(args: tuple[str, str, str, int | None, int]) -> dict:
    """Encodes both images of a pair and returns side `which` (0 photo, 1 anime); an error if either fails.

    Each pair split checks both files so that an unreadable image drops the pair from both splits
    and record i of `pair_photos` and `pair_anime` stay the same pair.
    """
    photo, anime, name, resize, which = args
    both = [encode_file((photo, name, resize)), encode_file((anime, name, resize))]
    for record in both:
        if "error" in record:
            return record
    return both[which]


def _builder_class():
    import tensorflow_datasets as tfds

    class ScenimefyFolders(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """The four Scenimefy image folders as array_record splits."""

        VERSION = tfds.core.Version("1.0.0")

        def __init__(self, *, unpaired_root: str, paired_root: str, resize: int | None, workers: int, **kwargs):
            self._files = {}
            photos, anime = folders.unpaired_files(unpaired_root)
            pair_photos, pair_anime = folders.paired_files(paired_root)
            roots = {
                "photos": os.path.join(unpaired_root, "trainA"), "anime": os.path.join(unpaired_root, "trainB"),
                "pair_photos": os.path.join(paired_root, "trainA"), "pair_anime": os.path.join(paired_root, "trainB"),
            }
            for split, paths in (("photos", photos), ("anime", anime)):
                self._files[split] = [(encode_file, (p, os.path.relpath(p, roots[split]), resize)) for p in paths]
            for which, split in enumerate(("pair_photos", "pair_anime")):
                self._files[split] = [
                    (encode_pair, (a, b, os.path.relpath(a, roots["pair_photos"]), resize, which))
                    for a, b in zip(pair_photos, pair_anime)
                ]
            self._workers = workers
            self.skipped: dict[str, list[str]] = {split: [] for split in SPLITS}
            super().__init__(**kwargs)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description="Scenimefy training images (photos, anime, pseudo pairs) as PNG bytes.",
                features=tfds.features.FeaturesDict(
                    {"image": tfds.features.Tensor(shape=(), dtype=np.object_), "name": tfds.features.Text()}
                ),
                disable_shuffling=True,
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._generate_examples(split) for split in SPLITS}

        def _generate_examples(self, split):
            fn = self._files[split][0][0] if self._files[split] else encode_file
            jobs = [args for _, args in self._files[split]]
            pool = multiprocessing.get_context("spawn").Pool(self._workers) if self._workers > 1 else None
            try:
                results = pool.imap(fn, jobs, chunksize=16) if pool else map(fn, jobs)
                for key, record in enumerate(results):
                    if "error" in record:
                        self.skipped[split].append(record["error"])
                        continue
                    yield key, record
            finally:
                if pool:
                    pool.close()
                    pool.join()

    return ScenimefyFolders


def build_packed_dataset(
    unpaired_root: str, paired_root: str, output_dir: str, *, resize: int | None = None, workers: int = 0
) -> dict:
    """Packs the folders into `output_dir` (a tfds data directory); returns a summary dict.

    Read it back with `pipeline.record_sources(summary["data_dir"])` or `--config.data.packed=...`.
    """
    cls = _builder_class()
    workers = workers or os.cpu_count() or 1
    builder = cls(unpaired_root=unpaired_root, paired_root=paired_root, resize=resize, workers=workers,
                  data_dir=output_dir, file_format="array_record")
    builder.download_and_prepare()
    skipped = {split: names for split, names in builder.skipped.items() if names}
    return {
        "data_dir": builder.data_dir,
        "counts": {split: builder.info.splits[split].num_examples for split in SPLITS},
        "skipped": skipped,
    }
