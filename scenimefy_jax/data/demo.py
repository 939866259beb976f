"""A procedural demo data set, so that the training command runs on a fresh machine with nothing downloaded.

Each scene is drawn from a seed as a label map (sky, clouds, sun, up to three mountain ridges, ground,
water, trees) plus photo-like shading: sky gradients, fractal cloud and rock texture, haze on distant
ridges, reflections and ripples on water, sensor noise. The "anime" rendering of the same scene keeps
the layout and replaces the shading with what the Shinkai-style target domain looks like to a
discriminator: a posterised sky, one flat and more saturated colour per region, and dark outlines on
region boundaries.

`write_demo_dataset` lays the result out exactly as the official loaders expect (docs/reference.md §2.2):

    <root>/unpaired_s2a/trainA/   photo-like scenes         (seeds from one stream)
    <root>/unpaired_s2a/trainB/   anime-like renderings     (of *other* scenes: unpaired)
    <root>/pair_s2a/trainA/       photo-like scene  <name>.png
    <root>/pair_s2a/trainB/       its anime rendering, same <name>.png

Everything is a pure function of `(seed, index)`, so the same seed always writes the same bytes.
"""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

SKY, CLOUD, SUN, GROUND, WATER, TREE = 0, 1, 2, 3, 4, 5
MOUNTAIN0 = 6  # ridges are MOUNTAIN0, MOUNTAIN0 + 1, ... from far to near
_MANIFEST = "demo_manifest.json"
_VERSION = 1


def _fractal_noise(rng: np.random.Generator, height: int, width: int, octaves: int = 4) -> np.ndarray:
    """`[H, W]` float noise in about [-1, 1]: octaves of bicubically upsampled random grids."""
    out = np.zeros((height, width), np.float32)
    amplitude, total = 1.0, 0.0
    for octave in range(octaves):
        cells = 2 ** (octave + 2)
        grid = rng.standard_normal((cells, cells)).astype(np.float32)
        up = np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.Resampling.BICUBIC))
        out += amplitude * up
        total += amplitude
        amplitude *= 0.5
    return out / total


def _ridge(rng: np.random.Generator, width: int, base: float, roughness: float) -> np.ndarray:
    """`[W]` heights (fraction of the image height from the top) of a mountain ridge line."""
    line = np.zeros(width, np.float32)
    amplitude = roughness
    for octave in range(5):
        knots = 2 ** (octave + 1) + 1
        values = rng.uniform(-1.0, 1.0, knots).astype(np.float32)
        line += amplitude * np.interp(np.linspace(0, knots - 1, width), np.arange(knots), values)
        amplitude *= 0.5
    return base + line


def _mix(a, b, t):
    t = np.asarray(t, np.float32)[..., None]
    return np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t


def render_scene(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws scene `(seed, index)` at `size x size`.

    Returns `(photo [H, W, 3] uint8, labels [H, W] int32)`; labels use the module constants.
    """
    rng = np.random.default_rng([seed, index, 0x5CE])
    h = w = size
    ys = (np.arange(h, dtype=np.float32) / max(h - 1, 1))[:, None] * np.ones((1, w), np.float32)
    xs = np.ones((h, 1), np.float32) * (np.arange(w, dtype=np.float32) / max(w - 1, 1))[None, :]
    labels = np.full((h, w), SKY, np.int32)

    # Sky: a vertical gradient between a zenith and a horizon colour; day, dusk or overcast.
    mood = rng.integers(3)
    zenith = [(40, 90, 200), (60, 40, 120), (110, 120, 140)][mood] + rng.integers(-20, 21, 3)
    horizon = [(170, 210, 240), (250, 150, 80), (190, 195, 200)][mood] + rng.integers(-20, 21, 3)
    horizon_y = rng.uniform(0.45, 0.7)
    image = _mix(zenith, horizon, np.clip(ys / horizon_y, 0, 1) ** 0.8)

    # Clouds: thresholded fractal noise, brighter on top.
    clouds = _fractal_noise(rng, h, w) + 0.6 * (ys - 0.25)
    cloud_mask = (clouds < rng.uniform(-0.45, -0.15)) & (ys < horizon_y)
    cloud_colour = _mix((255, 255, 255), horizon, 0.3 + 0.4 * np.clip(ys / horizon_y, 0, 1))
    image = np.where(cloud_mask[..., None], cloud_colour, image)
    labels[cloud_mask] = CLOUD

    # Sun (or moon) disc.
    cy, cx, radius = rng.uniform(0.1, 0.4), rng.uniform(0.1, 0.9), rng.uniform(0.03, 0.07)
    sun = (ys - cy) ** 2 + (xs - cx) ** 2 < radius**2
    image = np.where(sun[..., None], np.array([255, 245, 200], np.float32), image)
    labels[sun] = SUN

    # Mountain ridges, far to near: darker, less hazy, rougher texture the closer they are.
    n_ridges = int(rng.integers(1, 4))
    rock = _fractal_noise(rng, h, w, octaves=5)
    for k in range(n_ridges):
        base = horizon_y - 0.25 + 0.12 * k + rng.uniform(-0.04, 0.04)
        ridge = _ridge(rng, w, base, rng.uniform(0.08, 0.18))
        inside = ys > ridge[None, :]
        nearness = (k + 1) / n_ridges
        colour = np.array([(70, 90, 110), (60, 100, 70), (110, 95, 80)][int(rng.integers(3))], np.float32)
        colour = colour + rng.integers(-15, 16, 3)
        haze = 0.6 * (1 - nearness)
        shade = _mix(colour * (0.8 + 0.25 * rock[..., None]), horizon, haze)
        image = np.where(inside[..., None], shade, image)
        labels[inside] = MOUNTAIN0 + k

    # Ground and water in front.
    ground_y = horizon_y + rng.uniform(0.02, 0.1)
    ground = ys > ground_y
    grass = np.array([(70, 130, 50), (120, 140, 60), (90, 110, 70)][int(rng.integers(3))], np.float32)
    image = np.where(ground[..., None], grass * (0.75 + 0.3 * _fractal_noise(rng, h, w, 5)[..., None]), image)
    labels[ground] = GROUND
    if rng.random() < 0.7:
        shore = ground_y + rng.uniform(0.05, 0.2) + 0.04 * np.sin(xs * rng.uniform(3, 9) + rng.uniform(0, 6))
        water = ys > shore
        # Reflection of the sky with horizontal ripples.
        ripple = 0.5 + 0.5 * np.sin(ys * h * rng.uniform(0.4, 0.9) + 2.0 * _fractal_noise(rng, h, w, 3))
        reflect = _mix(horizon, zenith, np.clip((ys - shore) / max(1e-3, 1 - shore.min()), 0, 1))
        image = np.where(water[..., None], reflect * (0.7 + 0.15 * ripple[..., None]), image)
        labels[water] = WATER

    # Trees: dark-green cones standing on the ground line.
    for _ in range(int(rng.integers(0, 7))):
        tx, tw, th = rng.uniform(0, 1), rng.uniform(0.03, 0.08), rng.uniform(0.1, 0.3)
        foot = ground_y + rng.uniform(0.0, 0.05)
        cone = (ys < foot) & (ys > foot - th) & (np.abs(xs - tx) < tw * (ys - (foot - th)) / th)
        leaf = np.array([30, 70 + rng.integers(0, 40), 35], np.float32)
        image = np.where(cone[..., None], leaf * (0.8 + 0.3 * rock[..., None]), image)
        labels[cone] = TREE

    image = image + rng.normal(0.0, 4.0, image.shape)  # sensor noise
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), labels


def anime_render(photo: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The anime-like rendering of a scene: flat, saturated region colours, banded sky, dark outlines.

    `photo [H, W, 3] uint8` and `labels [H, W]` from `render_scene`; returns `[H, W, 3] uint8`.
    """
    photo_f = photo.astype(np.float32)
    out = np.empty_like(photo_f)
    for label in np.unique(labels):
        mask = labels == label
        if label == SKY:
            # Posterise the sky gradient into four bands, as cel-painted skies are.
            rows = np.where(mask.any(axis=1))[0]
            bands = np.clip(((np.arange(photo.shape[0]) - rows.min()) * 4) // max(1, rows.size), 0, 3)
            for band in range(4):
                band_mask = mask & (bands[:, None] == band)
                if band_mask.any():
                    out[band_mask] = photo_f[band_mask].mean(axis=0)
            continue
        out[mask] = np.median(photo_f[mask], axis=0)
    # Push colours away from grey (more saturated, a little brighter).
    grey = out.mean(axis=-1, keepdims=True)
    out = np.clip(grey + 1.5 * (out - grey) + 12.0, 0, 255)
    # Dark outlines wherever the region label changes (4-neighbourhood), one pixel wide.
    edge = np.zeros(labels.shape, bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    out[edge & (labels != SKY) & (labels != CLOUD)] = (25, 20, 35)
    return out.astype(np.uint8)


def _layout(root: str) -> dict[str, str]:
    return {
        "photos": os.path.join(root, "unpaired_s2a", "trainA"),
        "anime": os.path.join(root, "unpaired_s2a", "trainB"),
        "pair_photos": os.path.join(root, "pair_s2a", "trainA"),
        "pair_anime": os.path.join(root, "pair_s2a", "trainB"),
    }


def write_demo_dataset(
    root: str | os.PathLike,
    *,
    n_photos: int = 64,
    n_anime: int = 48,
    n_pairs: int = 48,
    size: int = 64,
    seed: int = 0,
) -> dict[str, str]:
    """Writes the demo data set under `root` in the official layout; returns the four folder paths.

    Idempotent: if `root` already holds a complete demo set written with the same arguments, nothing is
    rewritten (a manifest records the arguments; it is written last, so an interrupted run is redone).
    On several hosts (`jax.distributed`) process 0 writes it and the others wait until it is complete,
    so no host reads a half-written file and no two hosts write one file (docs/multihost.md).
    """
    from scenimefy_jax.parallel import distributed

    root = os.path.abspath(os.fspath(root))
    if distributed.is_writer():
        _write(root, n_photos=n_photos, n_anime=n_anime, n_pairs=n_pairs, size=size, seed=seed)
    distributed.barrier("demo_data")
    return _layout(root)


def _write(root: str, *, n_photos: int, n_anime: int, n_pairs: int, size: int, seed: int) -> dict[str, str]:
    folders = _layout(root)
    wanted = {"version": _VERSION, "n_photos": n_photos, "n_anime": n_anime, "n_pairs": n_pairs,
              "size": size, "seed": seed}
    manifest = os.path.join(root, _MANIFEST)
    if os.path.exists(manifest):
        with open(manifest) as f:
            if json.load(f) == wanted:
                return folders
    for path in folders.values():
        os.makedirs(path, exist_ok=True)
    # Three disjoint scene streams (index offsets) so that unpaired photos, unpaired anime and the
    # pairs never show the same scene.
    for i in range(n_photos):
        photo, _ = render_scene(seed, i, size)
        Image.fromarray(photo).save(os.path.join(folders["photos"], f"photo_{i:05d}.png"))
    for i in range(n_anime):
        photo, labels = render_scene(seed, 1_000_000 + i, size)
        Image.fromarray(anime_render(photo, labels)).save(os.path.join(folders["anime"], f"anime_{i:05d}.png"))
    for i in range(n_pairs):
        photo, labels = render_scene(seed, 2_000_000 + i, size)
        name = f"pair_{i:05d}.png"
        Image.fromarray(photo).save(os.path.join(folders["pair_photos"], name))
        Image.fromarray(anime_render(photo, labels)).save(os.path.join(folders["pair_anime"], name))
    with open(manifest + ".tmp", "w") as f:
        json.dump(wanted, f)
    os.replace(manifest + ".tmp", manifest)
    return folders
