"""The procedural demo data set: deterministic, official layout, anime rendering flatter than the photo."""
import hashlib
import os

import numpy as np

from scenimefy_jax.data import demo, folders


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            h.update(name.encode())
            h.update(open(os.path.join(dirpath, name), "rb").read())
    return h.hexdigest()


def test_layout_counts_and_determinism(tmp_path):
    kw = dict(n_photos=5, n_anime=4, n_pairs=3, size=32, seed=7)
    paths = demo.write_demo_dataset(tmp_path / "a", **kw)
    demo.write_demo_dataset(tmp_path / "b", **kw)
    assert _digest(tmp_path / "a" / "unpaired_s2a") == _digest(tmp_path / "b" / "unpaired_s2a")
    assert _digest(tmp_path / "a" / "pair_s2a") == _digest(tmp_path / "b" / "pair_s2a")
    photos, anime = folders.unpaired_files(tmp_path / "a" / "unpaired_s2a")
    pa, pb = folders.paired_files(tmp_path / "a" / "pair_s2a")
    assert (len(photos), len(anime), len(pa), len(pb)) == (5, 4, 3, 3)
    assert os.path.dirname(photos[0]) == paths["photos"]
    demo.write_demo_dataset(tmp_path / "c", **dict(kw, seed=8))
    assert _digest(tmp_path / "a" / "pair_s2a") != _digest(tmp_path / "c" / "pair_s2a")


def test_rendering_is_flat_with_outlines():
    photo, labels = demo.render_scene(0, 3, 64)
    anime = demo.anime_render(photo, labels)
    assert photo.shape == anime.shape == (64, 64, 3) and photo.dtype == anime.dtype == np.uint8
    # Flat colour regions: far fewer distinct colours than the textured, noisy photo.
    n_colours = lambda im: len(np.unique(im.reshape(-1, 3), axis=0))  # noqa: E731
    assert n_colours(anime) < n_colours(photo) / 10
    # Dark outlines on region boundaries below the sky.
    boundary = np.zeros(labels.shape, bool)
    boundary[1:] |= labels[1:] != labels[:-1]
    ground_edges = boundary & (labels >= demo.GROUND)
    assert ground_edges.any()
    assert anime[ground_edges].mean() < 60 < anime[~boundary].mean()
