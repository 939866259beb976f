"""Video files: a PyAV reader with exact frame indices (`reader.py`) and the anime-scene frame extractor
that builds the Shinkai data set from the films (`anime_frames.py`, docs/anime_dataset.md).

`from scenimefy_jax.video import VideoReader`. PyAV is an optional extra (`pip install -e '.[video]'`);
it is imported when a name below is first used, not by `import scenimefy_jax.video`.
"""
from __future__ import annotations

_READER_NAMES = ("VideoReader", "VideoInfo", "FrameSelection", "VideoReadError")


def __getattr__(name):
    if name in _READER_NAMES:
        from scenimefy_jax.video import reader

        return getattr(reader, name)
    raise AttributeError(name)


__all__ = list(_READER_NAMES)
