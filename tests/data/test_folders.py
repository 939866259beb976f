"""Official folder layouts: recursive sorted listing with the official extensions; pairs by file name."""
import os

import pytest

from scenimefy_jax.data import folders


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def test_listing_is_recursive_sorted_and_filters_extensions(tmp_path):
    for name in ["b.png", "a.JPG", "sub/c.jpeg", "sub/deeper/d.TiFf", "e.bmp", "f.ppm", "notes.txt", "g.gif"]:
        _touch(str(tmp_path / "trainA" / name))
    got = [os.path.relpath(p, tmp_path / "trainA") for p in folders.list_images(tmp_path / "trainA")]
    assert got == sorted(["a.JPG", "b.png", "e.bmp", "f.ppm", "sub/c.jpeg", "sub/deeper/d.TiFf"])


def test_unpaired_requires_both_folders_non_empty(tmp_path):
    _touch(str(tmp_path / "trainA" / "x.png"))
    os.makedirs(tmp_path / "trainB")
    with pytest.raises(folders.DatasetLayoutError, match="trainB: no images"):
        folders.unpaired_files(tmp_path)
    with pytest.raises(folders.DatasetLayoutError, match="not a directory"):
        folders.unpaired_files(tmp_path / "missing")


def test_pairs_match_by_name_and_mismatch_lists_names(tmp_path):
    for name in ["1.png", "2.png", "sub/3.png"]:
        _touch(str(tmp_path / "trainA" / name))
        _touch(str(tmp_path / "trainB" / name))
    a, b = folders.paired_files(tmp_path)
    assert [os.path.relpath(p, tmp_path / "trainA") for p in a] == [os.path.relpath(p, tmp_path / "trainB") for p in b]
    _touch(str(tmp_path / "trainA" / "only_a.png"))
    _touch(str(tmp_path / "trainB" / "only_b1.png"))
    _touch(str(tmp_path / "trainB" / "only_b2.png"))
    with pytest.raises(folders.DatasetLayoutError) as err:
        folders.paired_files(tmp_path)
    message = str(err.value)
    assert "1 only in trainA: only_a.png" in message
    assert "2 only in trainB: only_b1.png, only_b2.png" in message
