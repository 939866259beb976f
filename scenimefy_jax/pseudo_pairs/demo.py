"""Small random-weight stand-ins for the pseudo-pair job's networks (the `:demo` / `:tiny` variants).

Without downloads there are no real generators or segmenter: `random_generators` builds a small
StyleGAN2 G_s and a G_t that shares its mapping and coarse layers (as FreezeG fine-tuning leaves them)
with perturbed fine layers, and `random_segmenter` a tiny Mask2Former. The pipeline runs end to end;
what it keeps means nothing.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from scenimefy_jax.models import stylegan2 as sg


def _channels(size: int) -> tuple[tuple[int, int], ...]:
    table = {4: 32, 8: 32, 16: 32, 32: 16, 64: 16, 128: 8, 256: 8}
    return sg.channels_field({r: c for r, c in table.items() if r <= size})


def random_generators(size: int = 64, seed: int = 0):
    """`(source, target)` `sampling.LoadedGenerator`s of a small random StyleGAN2 at `size` px."""
    from scenimefy_jax.sampling import LoadedGenerator

    model = sg.Generator(size=size, style_dim=32, n_mlp=2, channels=_channels(size))
    variables = sg.init_generator(model, jax.random.key(seed))
    arch = {"size": size, "style_dim": 32, "n_mlp": 2, "channels": {str(r): c for r, c in _channels(size)}}
    rng = np.random.default_rng(seed + 1)

    def perturb(path, x):  # G_t: the layers FreezeG would train (all but mapping and the 4-8 px ones)
        name = jax.tree_util.keystr(path)
        coarse = "style_" in name or "conv1" in name or "to_rgb1" in name or "convs_0" in name or "convs_1" in name
        if coarse or not jnp.issubdtype(x.dtype, jnp.floating):
            return x
        return x + 0.3 * jnp.asarray(rng.standard_normal(x.shape), x.dtype) * (jnp.std(x) + 1e-3)

    target = {"params": jax.tree_util.tree_map_with_path(perturb, variables["params"]), "noises": variables["noises"]}
    return (LoadedGenerator(model, dict(variables), arch, "<random source>"),
            LoadedGenerator(model, target, arch, "<random target>"))


def random_segmenter(dtype: str = "float32"):
    """A tiny random-weight Mask2Former with ADE20K's 150 classes."""
    from scenimefy_jax.segmentation.segmenter import random_segmenter as tiny

    return tiny(seed=0, dtype=dtype)
