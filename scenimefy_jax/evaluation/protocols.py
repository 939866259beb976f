"""The two FID input protocols: uint8 RGB image `[H, W, 3]` -> Inception input `[299, 299, 3]` float32.

How an image is brought to 299x299 moves FID by several points, so every FID or KID number must name
its protocol, and numbers from different protocols are not comparable (docs/reference.md §6.1):

* `pytorch_fid` (the default; the CUT and Hneg_SRC code Scenimefy builds on evaluates with
  `python -m pytorch_fid`): `x / 255`, then torch's `F.interpolate(size=(299, 299), mode="bilinear",
  align_corners=False)`, which does not antialias even when it shrinks, then `2x - 1`, giving [-1, 1].
  clean-fid's `legacy_pytorch` mode is the same.
* `clean` (clean-fid's `clean` mode): PIL's bicubic resize of each channel as a float32 ("F") image, which
  antialiases properly when shrinking and does not quantise to uint8 in between, clipped to [0, 255],
  then `(x - 128) / 128`, giving [-1, 0.9921875].

Both feed the same network, pytorch-fid's FIDInceptionV3 (`scenimefy_jax/models/inception.py`); clean-fid's
own network is a port of the TF graph with the same `inception-2015-12-05` weights. Images must already be
RGB (the loader converts greyscale, palette and RGBA images, as pytorch-fid's `.convert("RGB")` does).
These are host-side numpy/PIL functions, applied per image before batching.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from scenimefy_jax.models.resize import resize_bilinear_host

PROTOCOLS = ("pytorch_fid", "clean")
INPUT_SIZE = 299


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    return image


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown FID input protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


def preprocess_pytorch_fid(image: np.ndarray) -> np.ndarray:
    """pytorch-fid: [0, 1], torch bilinear (align_corners=False, no antialias) to 299, then `2x - 1`."""
    x = _check_image(image).astype(np.float32) / np.float32(255.0)
    x = resize_bilinear_host(x, (INPUT_SIZE, INPUT_SIZE))
    return 2.0 * x - 1.0


def preprocess_clean(image: np.ndarray) -> np.ndarray:
    """clean-fid `clean`: per-channel float32 PIL bicubic to 299, clip to [0, 255], then `(x - 128) / 128`."""
    image = _check_image(image)
    channels = []
    for c in range(3):
        # A 2-D float32 array becomes a mode "F" image (Pillow infers it; clean-fid spells mode="F").
        channel = Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32))
        assert channel.mode == "F", channel.mode
        resized = channel.resize((INPUT_SIZE, INPUT_SIZE), resample=Image.BICUBIC)
        channels.append(np.asarray(resized, dtype=np.float32))
    x = np.clip(np.stack(channels, axis=-1), 0.0, 255.0)
    return (x - 128.0) / 128.0


def preprocess(image: np.ndarray, protocol: str) -> np.ndarray:
    """uint8 `[H, W, 3]` RGB -> `[299, 299, 3]` float32 network input under `protocol` (one of `PROTOCOLS`)."""
    _check_protocol(protocol)
    if protocol == "pytorch_fid":
        return preprocess_pytorch_fid(image)
    return preprocess_clean(image)


def preprocess_batch(images: np.ndarray | Sequence[np.ndarray], protocol: str) -> np.ndarray:
    """`preprocess` of each image (a `[B, H, W, 3]` array, or a sequence of images of any sizes) stacked to
    `[B, 299, 299, 3]` float32."""
    _check_protocol(protocol)
    if len(images) == 0:
        return np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.float32)
    return np.stack([preprocess(image, protocol) for image in images])
