"""Pictures of label maps: the ADE20K palette, photo overlays, legends with pixel shares.

Used by the segment job and by anything else that shows a segmentation (e.g. pseudo-pair grids).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scenimefy_jax.segmentation import ade20k


def colorize(labels: np.ndarray) -> np.ndarray:
    """`[H, W]` class indices -> `[H, W, 3] uint8` in the ADE20K palette."""
    return ade20k.PALETTE[labels]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """`(1 - alpha) * photo + alpha * label colour`, rounded to uint8; `image` is `[H, W, 3] uint8`."""
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * colorize(labels).astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def class_fractions(labels: np.ndarray) -> list[dict]:
    """The classes present in `[H, W]` labels, largest share first: `{"index", "name", "fraction"}`."""
    counts = np.bincount(labels.ravel(), minlength=ade20k.NUM_CLASSES)
    total = labels.size
    order = sorted(np.flatnonzero(counts), key=lambda c: (-counts[c], c))
    return [{"index": int(c), "name": ade20k.CLASS_NAMES[c], "fraction": round(float(counts[c]) / total, 6)}
            for c in order]


def draw_legend(classes: list[dict]) -> np.ndarray:
    """One row per class: a swatch of its palette colour, its name and its pixel share -> `[h, w, 3] uint8`."""
    font = ImageFont.load_default()
    texts = [f"{c['name']}  {100 * c['fraction']:.1f}%" for c in classes] or ["(no pixels)"]
    boxes = [font.getbbox(t) for t in texts]
    text_h = max(b[3] for b in boxes)
    row, pad = max(14, text_h + 4), 4
    swatch = row - 4
    width = pad + swatch + pad + max(b[2] for b in boxes) + pad
    canvas = Image.new("RGB", (width, pad + row * len(texts) + pad - 4), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(texts):
        y = pad + i * row
        if classes:
            colour = tuple(int(v) for v in ade20k.PALETTE[classes[i]["index"]])
            draw.rectangle([pad, y, pad + swatch - 1, y + swatch - 1], fill=colour, outline=(0, 0, 0))
        draw.text((pad + swatch + pad, y + (swatch - text_h) // 2), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
