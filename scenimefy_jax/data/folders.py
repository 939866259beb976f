"""The official data set layouts (docs/reference.md §2.2) as sorted lists of files.

Unpaired (`UnalignedDataset`):  `<root>/trainA/` photos, `<root>/trainB/` anime.
Paired (`AlignedDataset`):      `<root>/trainA/` photos, `<root>/trainB/` anime, matched by file name.

File lists are built recursively with the official extensions (any case) and sorted, as
`make_dataset` + `sorted` do in the official code.
"""
from __future__ import annotations

import os
from typing import Sequence

OFFICIAL_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff")
"""`IMG_EXTENSIONS` of the official `image_folder.py` (matched case-insensitively)."""


class DatasetLayoutError(ValueError):
    """A data folder that does not have the official layout; the message says what is wrong."""


def list_images(folder: str | os.PathLike) -> list[str]:
    """All image files below `folder` (recursive, official extensions, any case), sorted by path."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DatasetLayoutError(f"{folder}: not a directory")
    found = []
    for dirpath, _, filenames in os.walk(folder, followlinks=True):
        for name in filenames:
            if name.lower().endswith(OFFICIAL_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
    return sorted(found)


def unpaired_files(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """`(photos, anime)` of an unpaired root (`trainA/`, `trainB/`); both must be non-empty."""
    root = os.fspath(root)
    photos = list_images(os.path.join(root, "trainA"))
    anime = list_images(os.path.join(root, "trainB"))
    for name, files in (("trainA", photos), ("trainB", anime)):
        if not files:
            raise DatasetLayoutError(f"{os.path.join(root, name)}: no images found")
    return photos, anime


def paired_files(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """`(photos, anime)` of a paired root, element i of both lists having the same relative path.

    The official loader pairs the i-th entries of the two independently sorted lists, which is only
    right when the names match; here a mismatch is an error that lists the unmatched names.
    """
    root = os.fspath(root)
    dir_a, dir_b = os.path.join(root, "trainA"), os.path.join(root, "trainB")
    photos, anime = list_images(dir_a), list_images(dir_b)
    rel_a = [os.path.relpath(p, dir_a) for p in photos]
    rel_b = [os.path.relpath(p, dir_b) for p in anime]
    only_a, only_b = sorted(set(rel_a) - set(rel_b)), sorted(set(rel_b) - set(rel_a))
    if only_a or only_b:
        raise DatasetLayoutError(
            f"{root}: trainA and trainB must hold the same file names. "
            f"{_describe(only_a, 'only in trainA')}; {_describe(only_b, 'only in trainB')}"
        )
    if not photos:
        raise DatasetLayoutError(f"{root}: no image pairs found in trainA/ and trainB/")
    return photos, anime


def _describe(names: Sequence[str], what: str, limit: int = 20) -> str:
    if not names:
        return f"none {what}"
    shown = ", ".join(names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{len(names)} {what}: {shown}{more}"
