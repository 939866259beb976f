"""One batch of pseudo-pair candidates as one jitted program: G_s, G_t and the segmenter (docs/reference.md §3.3).

Candidate `i` is defined by its index alone, so any batch size, device count, host count or restart
produces it identically:

* its latent: row `i` of a `.npy`, `z_from_seed(seeds[i])` (the sample job's convention), or by
  default `jax.random.normal(fold_in(key(seed), i), (style_dim,))`;
* its per-layer noise (`noise="random"`): `key(noise_seed)` is split into a G_s and a G_t key and
  candidate `i` draws from `fold_in(that key, i)`, so the two generators draw independently (the
  official behaviour, quirk P1); with `share_noise=True` both use G_s's draw; `noise="fixed"` uses
  each checkpoint's stored noise buffers.

Both generators render `w = G_s.mapping(z)` with truncation `psi` towards the source `w_avg`; images
go to the segmenter as `round((x + 1) * 255 / 2)` (unclamped unless `clamp_segmenter_input`, quirk P2),
at the generator's resolution or upscaled to `segment_size` (quirk P3) with the scores resized back.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from scenimefy_jax.models.resize import resize_bilinear
from scenimefy_jax.pseudo_pairs import selection


@dataclasses.dataclass(frozen=True)
class CandidateOptions:
    truncation: float = 0.7
    noise: str = "random"  # "random" | "fixed"
    share_noise: bool = False  # P1: official False (independent noise for G_s and G_t)
    clamp_segmenter_input: bool = False  # P2: official False
    segment_size: int = 0  # P3: 0 = at the generator's resolution (official); else upscale to this side


def latent_of_index(seed: int, index: np.ndarray, style_dim: int) -> np.ndarray:
    """z of the default candidate stream, `normal(fold_in(key(seed), i))`, computed on the host CPU."""
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.asarray(index, jnp.uint32))
        return np.asarray(jax.vmap(lambda k: jax.random.normal(k, (style_dim,)))(keys), np.float32)


def _noise_for(model, key, index):
    """Per-candidate noise maps `[B, R, R, 1]` for every layer, from `fold_in(key, i)`."""
    def one(i):
        keys = jax.random.split(jax.random.fold_in(key, i), model.num_layers)
        return [jax.random.normal(k, s[1:]) for k, s in zip(keys, model.noise_shapes())]

    return jax.vmap(one)(index)


def make_candidate_fn(source, target, sem_seg_fn: Callable, options: CandidateOptions) -> Callable:
    """`(variables_s, variables_t, seg_params, w_avg [1, D], z [B, D], index [B], noise_key_data) -> dict`.

    `noise_key_data` is `jax.random.key_data(key(noise_seed))` (plain uint32, so it can be replicated
    across hosts).

    `source` / `target`: `sampling.LoadedGenerator`s (their `.model`); `sem_seg_fn`: the segmenter's
    pure `(params, images 0..255) -> [B, H, W, K]`. Returns uint8 images `photo`, `anime`
    `[B, H, W, 3]` (the official writer's rounding), `seg_loss [B]`, `seg_classes [B]`,
    `present [B, K]` (classes of the photo), `labels_photo` / `labels_anime [B, H, W]`.
    """
    g_s, g_t = source.model, target.model
    random_noise = options.noise == "random"

    def render(model, variables, w, w_avg, noise):
        kwargs = dict(input_is_latent=True, truncation=options.truncation, truncation_latent=w_avg)
        if noise is None:
            return model.apply(variables, [w], randomize_noise=False, **kwargs)
        return model.apply(variables, [w], noise=noise, **kwargs)

    def segment(seg_params, images):
        x = selection.segmenter_input(images, clamp=options.clamp_segmenter_input)
        h, w = x.shape[1:3]
        if options.segment_size and options.segment_size != min(h, w):
            scale = options.segment_size / min(h, w)
            size = (int(round(h * scale)), int(round(w * scale)))
            return resize_bilinear(sem_seg_fn(seg_params, resize_bilinear(x, size)), (h, w))
        return sem_seg_fn(seg_params, x)

    def candidates(variables_s, variables_t, seg_params, w_avg, z, index, noise_key_data):
        w = g_s.apply(variables_s, z, method=g_s.mapping)
        noise_s = noise_t = None
        if random_noise:
            key_s, key_t = jax.random.split(jax.random.wrap_key_data(noise_key_data))
            noise_s = _noise_for(g_s, key_s, index)
            noise_t = noise_s if options.share_noise else _noise_for(g_t, key_t, index)
        photo = render(g_s, variables_s, w, w_avg, noise_s)
        anime = render(g_t, variables_t, w, w_avg, noise_t)
        sem_photo = segment(seg_params, photo)
        sem_anime = segment(seg_params, anime)
        seg_loss, seg_classes, present = selection.seg_statistics(sem_anime, sem_photo)
        return {
            "photo": to_uint8(photo), "anime": to_uint8(anime),
            "seg_loss": seg_loss, "seg_classes": seg_classes, "present": present,
            "labels_photo": jnp.argmax(sem_photo, -1).astype(jnp.uint8),
            "labels_anime": jnp.argmax(sem_anime, -1).astype(jnp.uint8),
        }

    return candidates


def to_uint8(images: jnp.ndarray) -> jnp.ndarray:
    """The official pair writer (docs/reference.md §3.3): clamp, [0, 1], `*255 + 0.5`, clamp, truncate."""
    x = (jnp.clip(images, -1.0, 1.0) + 1.0) / 2.0
    return jnp.clip(x * 255.0 + 0.5, 0, 255).astype(jnp.uint8)


def jit_candidate_fn(fn: Callable, mesh) -> Callable:
    """Jits `make_candidate_fn`'s function with networks replicated and candidates split on the data axis."""
    from scenimefy_jax.parallel import mesh as mesh_lib

    rep, data = mesh_lib.replicated(mesh), mesh_lib.data_sharded(mesh)
    return jax.jit(fn, in_shardings=(rep, rep, rep, rep, data, data, rep), out_shardings=data)


__all__: list[Any] = ["CandidateOptions", "latent_of_index", "make_candidate_fn", "jit_candidate_fn", "to_uint8"]
