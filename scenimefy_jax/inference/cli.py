"""The translate job: `python -m scenimefy_jax.main --config=configs/translate.py --config.checkpoint=...`.

Every readable input image `<stem>.<ext>` becomes `<output>/<stem>.png`. A file that cannot be read
is reported by name and skipped; the others are still written, and the job then exits with status 1
and a summary. Existing outputs are kept unless `--config.overwrite=True`. Each PNG is written to a
temporary name and renamed, so an interrupted run never leaves a truncated image behind. On several
hosts each translates every `process_count`-th input on its own devices (docs/multihost.md); the
summary and exit status cover all of them.
"""
from __future__ import annotations

import collections
import os
import time

from absl import logging
from tqdm import tqdm

from scenimefy_jax.data import images as image_ops
from scenimefy_jax.data.image_files import (
    ConfigError,
    check_common_options,
    find_inputs,
    finish_all_processes,
    prefetch_images,
)
from scenimefy_jax.parallel import distributed


def _validate(config) -> tuple[list[str], dict]:
    check_common_options(
        config,
        checkpoint_help="an official *_net_G.pth or a directory written by tools/convert_checkpoint.py",
        output_help="the folder that receives <stem>.png files")
    background = None
    if config.alpha_background:
        try:
            background = tuple(int(v) for v in str(config.alpha_background).split(","))
        except ValueError:
            background = ()
        if len(background) != 3 or not all(0 <= v <= 255 for v in background):
            raise ConfigError(f"--config.alpha_background must be 'R,G,B' with 0..255 values, got {config.alpha_background!r}")
    inputs, ignored = find_inputs(config.input)
    for path in ignored:
        logging.warning("ignoring %s: not an image file extension (%s)", path, ", ".join(image_ops.IMAGE_EXTENSIONS))
    if not inputs:
        raise ConfigError(f"--config.input={config.input!r}: no image files found")
    stems = collections.defaultdict(list)
    for path in inputs:
        stems[os.path.splitext(os.path.basename(path))[0]].append(path)
    clashes = {s: p for s, p in stems.items() if len(p) > 1}
    if clashes:
        listed = "; ".join(f"{s}.png <- {', '.join(p)}" for s, p in sorted(clashes.items()))
        raise ConfigError(f"--config.input: several inputs would write the same output: {listed}")
    return inputs, {"alpha_background": background}


def run(config) -> int:
    from scenimefy_jax.inference.translator import Translator

    try:
        inputs, options = _validate(config)
    except ConfigError as e:
        logging.error("%s", e)
        return 2
    os.makedirs(config.output, exist_ok=True)
    out_path = {p: os.path.join(config.output, os.path.splitext(os.path.basename(p))[0] + ".png") for p in inputs}
    todo = [p for p in inputs if config.overwrite or not os.path.exists(out_path[p])]
    kept = len(inputs) - len(todo)
    if kept:
        logging.info("%d outputs already exist in %s and are kept (--config.overwrite=True to redo)", kept, config.output)

    from scenimefy_jax.convert.torch_checkpoint import CheckpointError

    try:
        translator = Translator.from_checkpoint(
            config.checkpoint,
            dtype=config.dtype,
            batch_size=config.batch_size,
            max_side=config.max_side or None,
            alpha_background=options["alpha_background"],
        )
    except (CheckpointError, ValueError, OSError) as e:  # unreadable, another kind, another architecture
        logging.error("--config.checkpoint=%r: cannot be loaded as a translator: %s", config.checkpoint, e)
        return 2
    # Several hosts: each translates its share on its own devices and writes those outputs.
    todo = distributed.process_share(todo)
    failures: dict[str, str] = {}
    written = 0
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="img", desc="translate", disable=not config.progress)
    decoded = prefetch_images(todo, options["alpha_background"], config.decode_workers, failures)

    def safe_inputs():
        for path, image in decoded:
            try:
                yield path, translator.preprocess(image, path)
            except ValueError as e:
                failures[path] = str(e)
                bar.update(1)

    for path, anime in translator.translate_many(safe_inputs()):
        try:
            image_ops.save_png(anime, out_path[path])
            written += 1
        except OSError as e:
            failures[path] = f"cannot write {out_path[path]}: {e}"
        bar.update(1)
    bar.update(len(todo) - bar.n)
    bar.close()
    return finish_all_processes("translated", written, config.output, time.perf_counter() - start, kept, failures)
