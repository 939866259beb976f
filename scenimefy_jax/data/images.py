"""Reading user images and the official test-time pre/post-processing (docs/reference.md §1.7).

The official `test.py` path is: PIL open -> `.convert("RGB")` -> resize each side to the nearest
multiple of 4 (Python `round`, so 270.5 -> 270) with BICUBIC if that changes the size -> [0, 1] ->
[-1, 1]; the output is clamped to [-1, 1], mapped to [0, 255] in float32 and cast to uint8 by
truncation. `preprocess` / `postprocess` reproduce that bit for bit.

Where a plain `.convert("RGB")` would silently damage a photo, `load_image` deliberately does more
than the official code (documented in the README): it applies the EXIF orientation tag, and scales
16-bit grayscale to 8 bits (Pillow's conversion would saturate every value above 255).
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")
"""The official loader's extensions (any case), plus WebP."""

MIN_SIDE = 8
"""Smallest side the generator accepts after rounding: two stride-2 stages leave 2 px, the least
a reflection pad of 1 works on."""


class ImageReadError(ValueError):
    """An input file that is not a readable image; the message names the file."""


def is_image_file(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def _to_rgb(img: Image.Image, alpha_background: Sequence[int] | None) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grayscale: keep the high byte, as Pillow does for 16-bit RGB PNGs.
        arr = np.asarray(img, dtype=np.int64)
        arr = np.clip(arr, 0, 65535) >> 8
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        arr = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha and alpha_background is not None:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, tuple(alpha_background) + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "P" and has_alpha:
        img = img.convert("RGBA")  # Pillow warns when converting transparent palettes straight to RGB
    # CMYK, YCbCr, L, 1, P, RGBA (alpha dropped, as the official `.convert("RGB")` does), ...
    return img.convert("RGB")


def load_image(
    path: str | os.PathLike, *, alpha_background: Sequence[int] | None = None
) -> np.ndarray:
    """Reads any image Pillow can decode as `[H, W, 3] uint8` RGB.

    EXIF orientation is applied; grayscale, palette, CMYK, 16-bit and float images are converted to
    8-bit RGB. Transparent pixels keep their stored colour (the official behaviour) unless
    `alpha_background` gives an RGB colour to composite onto. Raises `ImageReadError` naming the
    file for anything unreadable.
    """
    path = os.fspath(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img, alpha_background)
                arr = np.asarray(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"{path}: decoded to an unusable array of shape {arr.shape}")
    return arr


def as_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validates an in-memory image: `[H, W]`, `[H, W, 1]`, `[H, W, 3]` or `[H, W, 4]` uint8 -> RGB."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"{name}: expected a uint8 array, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name}: expected shape [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def base4_size(height: int, width: int) -> tuple[int, int]:
    """The official `__make_power_2(img, base=4)` target size: each side rounded with Python `round`."""
    return int(round(height / 4) * 4), int(round(width / 4) * 4)


def limit_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrinks `image` (Lanczos, aspect kept) so its longer side is at most `max_side` (None/0: off)."""
    if not max_side:
        return image
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def round_to_base4(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Bicubic resize to the official base-4 size (a no-op when already a multiple of 4)."""
    h, w = image.shape[:2]
    nh, nw = base4_size(h, w)
    if min(nh, nw) < MIN_SIDE:
        raise ValueError(f"{name}: {w}x{h} is too small to translate (each side must round to >= {MIN_SIDE})")
    if (nh, nw) == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BICUBIC))


def to_model_input(image: np.ndarray) -> np.ndarray:
    """`[..., H, W, 3] uint8` -> float32 in [-1, 1], as ToTensor + Normalize(0.5, 0.5) compute it."""
    x = image.astype(np.float32) / np.float32(255)
    return (x - np.float32(0.5)) / np.float32(0.5)


def to_uint8(output: np.ndarray) -> np.ndarray:
    """Official `tensor2im`: clamp to [-1, 1], `(y + 1) / 2 * 255` in float32, truncating uint8 cast."""
    y = np.clip(np.asarray(output, dtype=np.float32), -1.0, 1.0)
    return ((y + np.float32(1)) / np.float32(2) * np.float32(255)).astype(np.uint8)


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Writes a PNG atomically: a temporary file in the same folder, then a rename."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
