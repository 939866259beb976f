"""What a finished (or stopped) pseudo-pair run leaves beside the pairs: numbers and pictures.

`summary.json` (acceptance rate, seg_loss quantiles, how often each ADE20K class appears in the kept
photos, settings, versions), `accepted_z.npy`, `grid_accepted.png` / `grid_rejected.png` (rows of
photo | anime | photo segmentation | anime segmentation, re-rendered from the candidates' indices) and
`seg_loss_hist.png` (kept and rejected candidates, with the threshold of the official rule).
"""
from __future__ import annotations

import datetime
import importlib
import os
import platform

import jax
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scenimefy_jax.data import images as image_ops
from scenimefy_jax.segmentation import ade20k
from scenimefy_jax.segmentation.visualize import colorize

GRID_ROWS = 8


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "numpy"):
        out[name] = importlib.import_module(name).__version__
    from scenimefy_jax import __version__

    out["scenimefy_jax"] = __version__
    return out


def _quantiles(values) -> dict:
    if not len(values):
        return {}
    q = np.quantile(np.asarray(values, np.float64), [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    return dict(zip(("min", "p10", "p25", "median", "p75", "p90", "max"), (round(float(v), 5) for v in q)))


def summary(config, records: list[dict], elapsed: float, complete: bool, devices: int) -> dict:
    accepted = [r for r in records if r["accepted"]]
    counts = np.zeros(ade20k.NUM_CLASSES, np.int64)
    for r in accepted:
        counts[[c for c in r["classes"] if c < ade20k.NUM_CLASSES]] += 1
    order = np.argsort(-counts, kind="stable")
    frequencies = {ade20k.CLASS_NAMES[c]: round(float(counts[c]) / max(len(accepted), 1), 4)
                   for c in order if counts[c]}
    from scenimefy_jax.pseudo_pairs.job import IDENTITY_KEYS

    return {
        "complete": complete,
        "num_pairs": len(accepted),
        "candidates": len(records),
        "acceptance_rate": round(len(accepted) / max(len(records), 1), 5),
        "seg_loss": {"all": _quantiles([r["seg_loss"] for r in records]),
                     "accepted": _quantiles([r["seg_loss"] for r in accepted])},
        "class_frequency_in_accepted_photos": frequencies,
        "this_run": {"seconds": round(elapsed, 2), "devices": devices, "processes": jax.process_count(),
                     "backend": jax.default_backend()},
        "settings": {k: config.get(k) for k in IDENTITY_KEYS},
        "versions": _versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _grid(generator, stream, indices: list[int]) -> np.ndarray | None:
    if not indices:
        return None
    rows = []
    bs = generator.config.batch_size
    for start in range(0, len(indices), bs):
        chunk = np.asarray(indices[start:start + bs])
        result = generator.run_batch(stream, chunk)
        for j in range(len(chunk)):
            rows.append(np.concatenate([result["photo"][j], result["anime"][j],
                                        colorize(result["labels_photo"][j]), colorize(result["labels_anime"][j])], 1))
    from scenimefy_jax.sampling import make_grid

    return make_grid(rows, columns=1)


def histogram(records: list[dict], threshold: float | None, width: int = 480, height: int = 220) -> np.ndarray:
    """seg_loss histogram: kept (green) over rejected (grey), the official threshold as a red line."""
    losses = np.asarray([r["seg_loss"] for r in records], np.float64)
    kept = np.asarray([r["accepted"] for r in records], bool)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if len(losses):
        lo, hi = float(losses.min()), float(losses.max())
        if threshold is not None:
            lo, hi = min(lo, threshold), max(hi, threshold)
        hi = hi if hi > lo else lo + 1e-3
        bins = np.linspace(lo, hi, 41)
        all_counts, _ = np.histogram(losses, bins)
        kept_counts, _ = np.histogram(losses[kept], bins)
        left, bottom, top = 10, height - 30, 20
        bar_w = (width - 2 * left) / 40
        scale = (bottom - top) / max(all_counts.max(), 1)
        for b in range(40):
            x0, x1 = left + b * bar_w, left + (b + 1) * bar_w - 1
            draw.rectangle([x0, bottom - all_counts[b] * scale, x1, bottom], fill=(180, 180, 180))
            if kept_counts[b]:
                draw.rectangle([x0, bottom - kept_counts[b] * scale, x1, bottom], fill=(40, 160, 60))
        if threshold is not None:
            x = left + (threshold - lo) / (hi - lo) * (width - 2 * left)
            draw.line([x, top, x, bottom], fill=(220, 30, 30), width=2)
        draw.text((left, bottom + 6), f"{lo:.3f}", fill=(0, 0, 0), font=font)
        draw.text((width - left - 40, bottom + 6), f"{hi:.3f}", fill=(0, 0, 0), font=font)
    draw.text((10, 4), f"seg_loss of {len(losses)} candidates: kept {int(kept.sum())} (green), "
              f"rejected {int((~kept).sum())} (grey)", fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def write_outputs(config, generator, stream, records: list[dict], elapsed: float, complete: bool) -> None:
    """Called on every process (the grids re-render candidates, a collective on several hosts); the
    first process writes."""
    from scenimefy_jax.data.atomic import write_json
    from scenimefy_jax.pseudo_pairs.job import SUMMARY

    out = config.output
    writer = jax.process_index() == 0
    accepted = [r["candidate"] for r in records if r["accepted"]]
    rejected = [r["candidate"] for r in records if not r["accepted"]]
    grids = {name: _grid(generator, stream, indices)
             for name, indices in (("grid_accepted.png", accepted[:GRID_ROWS]), ("grid_rejected.png", rejected[:GRID_ROWS]))}
    if not writer:
        return
    z = stream.z(np.asarray(accepted, np.int64)) if accepted else np.zeros((0, stream.style_dim), np.float32)
    tmp = os.path.join(out, "accepted_z.tmp.npy")
    np.save(tmp, z)
    os.replace(tmp, os.path.join(out, "accepted_z.npy"))
    for name, grid in grids.items():
        if grid is not None:
            image_ops.save_png(grid, os.path.join(out, name))
    threshold = config.seg_loss_th if config.selection == "official" else None
    image_ops.save_png(histogram(records, threshold), os.path.join(out, "seg_loss_hist.png"))
    # "complete": false (a stream that ran out, or max_candidates reached) lets a restart go on.
    write_json(os.path.join(out, SUMMARY), summary(config, records, elapsed, complete, generator.mesh.size))
