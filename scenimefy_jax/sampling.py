"""The sample job: render StyleGAN2 images from seeds or stored z latents (docs/reference.md §3.3 conventions).

    python -m scenimefy_jax.main --config=configs/sample.py --config.checkpoint=lhq-220000.pt \
        --config.checkpoint2=shinkai-221000.pt --config.seeds=0-15 --config.output=samples/

For each latent i, `<output>/<i>.png` holds the image of the first checkpoint, or, with `checkpoint2`,
the pair side by side (source left, target right) rendered as `generate_pair.py` does: both generators
take `w = G_s.mapping(z)` and the source w_avg (truncation applied to w). `<output>/grid.png` tiles them.
Images are written like the official pair writer: clamp to [-1, 1], map to [0, 1], `*255 + 0.5`, clamp,
uint8 (truncation), PNG.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image
from tqdm import tqdm

from scenimefy_jax import model_io
from scenimefy_jax.convert import stylegan2 as convert_sg
from scenimefy_jax.models import stylegan2 as sg
from scenimefy_jax.parallel import distributed


from scenimefy_jax.data.image_files import ConfigError  # noqa: E402  (one error type for every job)


@dataclasses.dataclass(frozen=True)
class LoadedGenerator:
    model: sg.Generator
    variables: dict  # {"params", "noises"}
    architecture: dict
    source: str


def load_generator(path: str, *, network: str = "g_ema", option: str = "checkpoint", conv_impl: str = "batched") -> LoadedGenerator:
    """A rosinality `.pt` or a converted/exported model directory (kind `stylegan2`) -> generator."""
    if not path:
        raise ConfigError(f"--config.{option} is required (a rosinality .pt or a converted model directory)")
    if os.path.isdir(path):
        try:
            saved = model_io.load_model(path, expected_kind=convert_sg.KIND)
        except ValueError as e:
            raise ConfigError(f"--config.{option}={path!r}: {e}") from e
        tree, arch = saved.params, saved.metadata["architecture"]
    elif os.path.isfile(path):
        from scenimefy_jax.convert import convert_file

        converted = convert_file(path, kind=convert_sg.KIND)
        tree, arch = converted.params, converted.architecture
    else:
        raise ConfigError(f"--config.{option}={path!r}: no such file or directory")
    if network not in tree:
        raise ConfigError(f"--config.{option}={path!r} holds no {network!r} network (it has {sorted(tree)})")
    model = convert_sg.generator_from_architecture(arch, conv_impl=conv_impl)
    variables = jax.tree_util.tree_map(jnp.asarray, dict(tree[network]))
    return LoadedGenerator(model, variables, dict(arch), path)


def parse_seeds(spec: str) -> list[int]:
    """`"0-7"`, `"1,5,9"` or `"0-3,10"` -> list of ints."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in str(spec).split(","))):
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ConfigError(f"--config.seeds: empty range {part!r}")
            seeds.extend(range(lo, hi + 1))
        elif part.isdigit():
            seeds.append(int(part))
        else:
            raise ConfigError(f"--config.seeds={spec!r}: expected e.g. '0-7' or '1,5,9'")
    if not seeds:
        raise ConfigError("--config.seeds is empty and no --config.latents file was given")
    return seeds


def z_from_seed(seed: int, style_dim: int) -> np.ndarray:
    """The z of a seed: `numpy.random.default_rng(seed).standard_normal(style_dim)` (float32)."""
    return np.random.default_rng(seed).standard_normal(style_dim).astype(np.float32)


def load_latents(path: str, style_dim: int) -> np.ndarray:
    if not os.path.isfile(path):
        raise ConfigError(f"--config.latents={path!r}: no such file")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError/OSError/UnpicklingError on bad files
        raise ConfigError(f"--config.latents={path!r}: not a .npy array ({e})") from e
    if z.ndim == 1:  # one z
        z = z[None]
    if z.ndim != 2 or z.shape[1] != style_dim:
        # A [N, n_latent, 512] array holds w+ codes, not z's: never flattened into N * n_latent z's.
        raise ConfigError(f"--config.latents={path!r}: expected z's of shape [N, {style_dim}], got {np.shape(z)}")
    return np.asarray(z, np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Official writer: clamp [-1, 1] -> [0, 1] -> `*255 + 0.5` -> clamp [0, 255] -> uint8 (docs/reference.md §3.3)."""
    x = (np.clip(images, -1.0, 1.0) + 1.0) / 2.0
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def make_grid(tiles: list[np.ndarray], columns: int, padding: int = 2) -> np.ndarray:
    h, w, c = tiles[0].shape
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    grid = np.zeros((rows * (h + padding) + padding, columns * (w + padding) + padding, c), np.uint8)
    for i, t in enumerate(tiles):
        r, col = divmod(i, columns)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = t
    return grid


def _write_png(array: np.ndarray, path: str) -> None:
    tmp = path + ".tmp"
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)


def make_render_fn(source: LoadedGenerator, target: LoadedGenerator | None, *, truncation: float, noise: str):
    """Jitted `(z [B, D], w_avg [1, D], key) -> (img_s, img_t or None)`; w from the source mapping."""
    randomize = noise == "random"

    def render(z, w_avg, key):
        g = source.model
        w = g.apply(source.variables, z, method=g.mapping)
        k_s, k_t = jax.random.split(key)
        kwargs = dict(input_is_latent=True, truncation=truncation, truncation_latent=w_avg, randomize_noise=randomize)
        img_s = g.apply(source.variables, [w], rngs={"noise": k_s}, **kwargs)
        img_t = None
        if target is not None:
            # generate_pair.py: independent noise draws for the two generators (quirk P1).
            img_t = target.model.apply(target.variables, [w], rngs={"noise": k_t}, **kwargs)
        return img_s, img_t

    return jax.jit(render)


def run(config) -> int:
    """The sample job; a bad config value is one error line and exit status 2."""
    try:
        return _run(config)
    except ConfigError as e:
        logging.error("%s", e)
        return 2


def _run(config) -> int:
    if config.noise not in ("fixed", "random"):
        raise ConfigError(f"--config.noise={config.noise!r}: expected 'fixed' or 'random'")
    if not config.output:
        raise ConfigError("--config.output is required (a folder receiving <i>.png and grid.png)")
    if config.batch_size < 1:
        raise ConfigError("--config.batch_size must be >= 1")
    source = load_generator(config.checkpoint, option="checkpoint", conv_impl=config.conv_impl)
    target = None
    if config.checkpoint2:
        target = load_generator(config.checkpoint2, option="checkpoint2", conv_impl=config.conv_impl)
        if target.model.size != source.model.size or target.model.style_dim != source.model.style_dim:
            raise ConfigError("--config.checkpoint2 has a different size or style_dim than --config.checkpoint")
    d = source.model.style_dim
    z_all = load_latents(config.latents, d) if config.latents else np.stack([z_from_seed(s, d) for s in parse_seeds(config.seeds)])
    truncation = float(config.truncation)
    w_avg = jnp.zeros((1, d))
    if truncation < 1:
        # docs/reference.md §3.3 step 1: w_avg from the source mapping over `truncation_mean` z's.
        g = source.model
        w_avg = jax.jit(lambda v, k: g.apply(v, k, config.truncation_mean, method=g.mean_latent))(
            source.variables, jax.random.key(config.truncation_seed)
        )
    render = make_render_fn(source, target, truncation=truncation, noise=config.noise)
    os.makedirs(config.output, exist_ok=True)
    bs = int(config.batch_size)
    n = len(z_all)
    base_key = jax.random.key(config.noise_seed)
    # On several hosts each renders every process_count-th batch (docs/multihost.md); a batch's noise
    # key depends on its index alone, so every image is the one a single host would write.
    starts = distributed.process_share(range(0, n, bs))
    grid_limit = int(config.grid_max) if config.grid else 0
    tile_index, tiles = [], []
    for start in tqdm(starts, desc="sampling", unit="batch", disable=not config.progress):
        z = z_all[start : start + bs]
        count = len(z)
        if count < bs and n > bs:  # pad the last batch: one compiled shape
            z = np.concatenate([z, np.zeros((bs - count, d), np.float32)])
        img_s, img_t = render(z, w_avg, jax.random.fold_in(base_key, start // bs))
        img_s = to_uint8(np.asarray(img_s)[:count])
        pics = img_s if img_t is None else np.concatenate([img_s, to_uint8(np.asarray(img_t)[:count])], axis=2)
        for j, pic in enumerate(pics):
            _write_png(pic, os.path.join(config.output, f"{start + j}.png"))
            if start + j < grid_limit:
                tile_index.append(start + j)
                tiles.append(pic)
    if grid_limit:
        size = source.model.size
        shape = (size, size * (1 if target is None else 2), 3)
        order = distributed.gather_rows(np.asarray(tile_index, np.int64))
        pictures = distributed.gather_rows(np.stack(tiles) if tiles else np.zeros((0, *shape), np.uint8))
        if distributed.is_writer() and len(order):
            grid = make_grid([pictures[i] for i in np.argsort(order)], config.grid_columns)
            _write_png(grid, os.path.join(config.output, "grid.png"))
    if distributed.is_writer():
        hosts = f" ({jax.process_count()} processes)" if jax.process_count() > 1 else ""
        logging.info("wrote %d images to %s%s", n, config.output, hosts)
    return 0


__all__: list[Any] = ["load_generator", "make_render_fn", "parse_seeds", "run", "to_uint8", "z_from_seed"]
