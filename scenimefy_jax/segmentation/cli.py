"""The segment job: `python -m scenimefy_jax.main --config=configs/segment.py --config.checkpoint=...`.

Every readable input image `<stem>.<ext>` gets, in `<output>/`:

    <stem>_labels.png      the per-pixel argmax class drawn in the ADE20K palette (`ade20k.PALETTE`)
    <stem>_overlay.png     the photo blended with those colours (`overlay_alpha` of label colour)
    <stem>_legend.png      a colour swatch, name and pixel share for each class found, largest first
    <stem>_labels_raw.png  with `--config.raw=True`: the class indices 0..149 as an 8-bit grayscale PNG

and `<output>/legend.json` lists per image the classes found (index, name, pixel fraction). It is
rewritten at the end of each run (also an interrupted one) and keeps the entries of images segmented
earlier into the same folder. On several hosts each segments every `process_count`-th input on its own
devices and writes those outputs; each records its entries in `legend.part-<i>.json`, which process 0
merges into `legend.json` when all have finished (a run interrupted on several hosts leaves the part
files, and the next run folds them in first). Images are segmented at their own size (the official selection feeds its
256x256 images unresized, docs/reference.md §3.4) unless `max_side` shrinks them; the outputs have the
size segmented. Inputs of equal size run as one batch.

As in the translate job: a file that cannot be read is reported by name and skipped, the others are
still written, and the job then exits with status 1 and a summary; a bad config value is one error
line naming the `--config.<option>` and exit status 2. Existing outputs are kept unless
`--config.overwrite=True`. Every file is written to a temporary name and renamed, so an interrupted
run never leaves a truncated one behind.
"""
from __future__ import annotations

import collections
import json
import os
import time
from typing import Iterable, Iterator

import numpy as np
from absl import logging
from tqdm import tqdm

from scenimefy_jax.data import images as image_ops
from scenimefy_jax.data.atomic import write_json
from scenimefy_jax.data.image_files import (
    ConfigError,
    check_common_options,
    finish_all_processes,
    find_inputs,
    prefetch_images,
    stem_clashes,
)
from scenimefy_jax.parallel import distributed
from scenimefy_jax.segmentation import ade20k
from scenimefy_jax.segmentation.visualize import class_fractions, colorize, draw_legend, overlay

OUTPUTS = {"labels": "_labels.png", "overlay": "_overlay.png", "legend": "_legend.png"}
RAW_OUTPUT = "_labels_raw.png"
LEGEND_JSON = "legend.json"
LEGEND_PART = "legend.part-{}.json"  # one per process on several hosts, merged by process 0


# ----------------------------------------------------------------------------- files

def output_paths(output: str, stem: str, raw: bool) -> dict[str, str]:
    names = dict(OUTPUTS, **({"raw": RAW_OUTPUT} if raw else {}))
    return {key: os.path.join(output, stem + suffix) for key, suffix in names.items()}


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _read_legend(path: str) -> dict | None:
    """The `images` of a legend (or part) file this job wrote; None if it is not one."""
    try:
        with open(path) as f:
            images = json.load(f)["images"]
        if isinstance(images, dict):
            return images
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_legend(path: str, images: dict) -> None:
    write_json(path, {"dataset": "ADE20K-150", "images": dict(sorted(images.items()))})


def _legend_parts(output: str) -> list[str]:
    prefix, suffix = LEGEND_PART.split("{}")
    return sorted(os.path.join(output, n) for n in os.listdir(output) if n.startswith(prefix) and n.endswith(suffix))


def _previous_legend(output: str) -> dict:
    """legend.json's entries with the part files of an interrupted multi-host run folded in (and those
    files removed, legend.json rewritten first so that nothing is lost if this run is killed too)."""
    path = os.path.join(output, LEGEND_JSON)
    legend = {}
    if os.path.exists(path):
        legend = _read_legend(path)
        if legend is None:
            logging.warning("%s is not a legend this job wrote; it is replaced by this run's entries only", path)
            legend = {}
    parts = _legend_parts(output)
    for part in parts:
        entries = _read_legend(part)
        if entries is None:
            logging.warning("%s is not a legend part this job wrote; ignored", part)
        else:
            legend.update(entries)
    if parts:
        _write_legend(path, legend)
        for part in parts:
            os.remove(part)
        logging.info("folded %d legend part file(s) of an interrupted multi-host run into %s", len(parts), path)
    return legend


def _batches_of_equal_size(items: Iterable[tuple[str, np.ndarray]], batch_size: int
                           ) -> Iterator[list[tuple[str, np.ndarray]]]:
    """Groups `(path, image)` pairs by image shape into lists of at most `batch_size` (the translator's rule:
    memory stays bounded by the number of distinct sizes times the batch size)."""
    buckets: dict[tuple[int, ...], list] = collections.defaultdict(list)
    for path, image in items:
        bucket = buckets[image.shape]
        bucket.append((path, image))
        if len(bucket) == batch_size:
            yield list(bucket)
            bucket.clear()
    for bucket in buckets.values():
        if bucket:
            yield bucket


# ----------------------------------------------------------------------------- the job

def _validate(config) -> list[str]:
    check_common_options(
        config,
        checkpoint_help="model_final_503e96.pkl, a Hugging Face Mask2Former folder, a state dict, or a directory "
                        "written by tools/convert_checkpoint.py",
        output_help="the folder that receives <stem>_labels.png files")
    if not 0.0 <= config.overlay_alpha <= 1.0:
        raise ConfigError(f"--config.overlay_alpha must be in [0, 1], got {config.overlay_alpha}")
    inputs, ignored = find_inputs(config.input)
    for path in ignored:
        logging.warning("ignoring %s: not an image file extension (%s)", path, ", ".join(image_ops.IMAGE_EXTENSIONS))
    # With the output folder among the inputs, a second run must not segment the first run's label maps.
    output = os.path.abspath(config.output)
    own = tuple(OUTPUTS.values()) + (RAW_OUTPUT,)
    ours = [p for p in inputs if os.path.dirname(os.path.abspath(p)) == output and p.endswith(own)]
    if ours:
        logging.info("ignoring %d file(s) in %s named like this job's outputs (*%s)", len(ours), config.output,
                     ", *".join(own))
        inputs = [p for p in inputs if p not in ours]
    if not inputs:
        raise ConfigError(f"--config.input={config.input!r}: no image files found")
    clashes = stem_clashes(inputs)
    if clashes:
        listed = "; ".join(f"{s}_labels.png <- {', '.join(p)}" for s, p in sorted(clashes.items()))
        raise ConfigError(f"--config.input: several inputs would write the same output: {listed}")
    return inputs


def _load_segmenter(config):
    from scenimefy_jax.convert.torch_checkpoint import CheckpointError
    from scenimefy_jax.segmentation.segmenter import Segmenter

    try:
        segmenter = Segmenter.from_checkpoint(config.checkpoint, dtype=config.dtype, batch_size=config.batch_size)
    except (CheckpointError, ValueError) as e:  # unreadable file, another model kind, unknown architecture
        raise ConfigError(f"--config.checkpoint={config.checkpoint!r}: cannot be loaded as a Mask2Former: {e}") from e
    if segmenter.num_classes != ade20k.NUM_CLASSES:
        raise ConfigError(
            f"--config.checkpoint={config.checkpoint!r}: predicts {segmenter.num_classes} classes; the segment "
            f"job names and colours the {ade20k.NUM_CLASSES} ADE20K classes"
        )
    return segmenter


def _write_outputs(image: np.ndarray, labels: np.ndarray, paths: dict[str, str], alpha: float) -> list[dict]:
    classes = class_fractions(labels)
    image_ops.save_png(colorize(labels), paths["labels"])
    image_ops.save_png(overlay(image, labels, alpha), paths["overlay"])
    image_ops.save_png(draw_legend(classes), paths["legend"])
    if "raw" in paths:
        image_ops.save_png(labels.astype(np.uint8), paths["raw"])  # 'L' mode: indices 0..149
    return classes


def run(config) -> int:
    import jax

    try:
        inputs = _validate(config)
        segmenter = _load_segmenter(config)
    except ConfigError as e:
        logging.error("%s", e)
        return 2
    os.makedirs(config.output, exist_ok=True)
    paths = {p: output_paths(config.output, _stem(p), config.raw) for p in inputs}
    todo = [p for p in inputs if config.overwrite or not all(os.path.exists(f) for f in paths[p].values())]
    kept = len(inputs) - len(todo)
    if kept:
        logging.info("%d inputs already have their outputs in %s; kept (--config.overwrite=True to redo)",
                     kept, config.output)

    legend_path = os.path.join(config.output, LEGEND_JSON)
    several = jax.process_count() > 1
    legend = {}
    if distributed.is_writer():
        legend = _previous_legend(config.output)
        for path in todo:  # every host's share: their entries come back in the part files
            legend.pop(_stem(path), None)
    # The other hosts write part files of the same names: not before process 0 has folded in old ones.
    distributed.barrier("segment/legend_read")
    todo = distributed.process_share(todo)  # several hosts: every process_count-th input each
    entries = legend if not several else {}
    own_legend = legend_path if not several else os.path.join(config.output, LEGEND_PART.format(jax.process_index()))
    failures: dict[str, str] = {}
    written = 0
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="img", desc="segment", disable=not config.progress)
    decoded = prefetch_images(todo, None, config.decode_workers, failures)
    sizes: dict[str, tuple[int, int]] = {}  # decoded sizes, before max_side

    def shrunk():
        for path, image in decoded:
            sizes[path] = image.shape[:2]
            yield path, image_ops.limit_side(image, config.max_side or None)

    try:
        for batch in _batches_of_equal_size(shrunk(), config.batch_size):
            labels = segmenter.labels(np.stack([image for _, image in batch]).astype(np.float32))
            for (path, image), image_labels in zip(batch, labels):
                try:
                    classes = _write_outputs(image, image_labels, paths[path], config.overlay_alpha)
                except OSError as e:
                    failures[path] = f"cannot write into {config.output}: {e}"
                else:
                    written += 1
                    entry = {"input": os.path.abspath(path), "checkpoint": os.path.abspath(config.checkpoint),
                             "height": int(image.shape[0]), "width": int(image.shape[1]), "classes": classes}
                    if sizes[path] != image.shape[:2]:
                        entry["resized_from"] = [int(v) for v in sizes[path]]
                    entries[_stem(path)] = entry
                bar.update(1)
    finally:  # an interrupted run still records the images it finished
        _write_legend(own_legend, entries)
    bar.update(len(todo) - bar.n)
    bar.close()
    if several:
        distributed.barrier("segment/legend_parts")  # every part is complete
        if distributed.is_writer():
            parts = [os.path.join(config.output, LEGEND_PART.format(p)) for p in range(jax.process_count())]
            for part in parts:
                legend.update(_read_legend(part) or {})
            _write_legend(legend_path, legend)
            for part in parts:
                os.remove(part)
    return finish_all_processes("segmented", written, config.output, time.perf_counter() - start, kept, failures)

