"""Reading video files with PyAV: stream facts, and decoded frames with their exact 0-based index.

A frame's index here is its position in the decoder's output, counted from the first frame of the
stream ("decode-and-count"). Decoders emit frames in presentation order, so B-frames and the codec's
reordering do not shift the count, and no index is ever guessed from a timestamp. That is the reason
this reader exists: the official anime-frame tool seeks with OpenCV's `CAP_PROP_POS_FRAMES`, which
jumps to a timestamp computed from the frame rate and so depends on the container and codec
(docs/reference.md §7). Counting costs a decode of every frame up to the last one wanted; converting
to RGB, the expensive part after decoding, is done only for the frames a caller asks for.

    reader = VideoReader("film.mkv")
    reader.info.frame_rate, reader.info.width, reader.info.height, reader.info.frame_count
    for index, rgb in reader.frames(): ...              # every frame, [H, W, 3] uint8
    selection = reader.frames_at([120, 40, 4000])
    for index, rgb in selection: ...                    # 40, 120, 4000 (if the video has that many)
    selection.past_end                                  # the requested indices the video ended before

Each pass opens the file anew, so one `VideoReader` can be iterated any number of times (a
translation job that reads a video twice, say) and holds no open file between passes.
"""
from __future__ import annotations

import dataclasses
import os
from fractions import Fraction
from typing import Callable, Iterable, Iterator

import numpy as np

try:
    import av
except ImportError as e:  # an optional extra: only the video tools need it
    raise ImportError("scenimefy_jax.video needs PyAV: pip install -e '.[video]' (av==18.1.0)") from e

COLOUR_MATRICES = {
    None: None,  # the matrix the stream is tagged with (swscale's BT.601 default when untagged)
    "bt601": "ITU601",  # what OpenCV's FFmpeg reader uses whatever the tag says (see docs/anime_dataset.md)
    "bt709": "ITU709",
}
"""`colour_matrix` values: the YUV->RGB matrix used for every frame."""


class VideoReadError(ValueError):
    """A file that cannot be opened or decoded as a video; the message names the file."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """Facts about the first video stream of a file, read from its headers (nothing is decoded)."""

    path: str
    codec: str  # decoder name, e.g. "h264"
    width: int
    height: int
    frame_rate: Fraction | None  # average frame rate (guessed by FFmpeg where the container has none)
    frame_count: int | None  # as the container records it (MP4 does, Matroska usually not); None if unknown
    duration_s: float | None  # of the stream, or of the whole file where the stream has none
    time_base: Fraction  # unit of the frames' timestamps (`pts`)


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _open(path: str, threads: int):
    """The container and its first video stream, with frame threading on (output order is unchanged)."""
    try:
        container = av.open(path)
    except FileNotFoundError:
        raise VideoReadError(f"{path}: no such file") from None
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoReadError(f"{path}: not a readable video ({_describe(e)})") from e
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    return container, stream


class VideoReader:
    """Decodes the first video stream of `path` (`threads`: decoder threads, 0 for FFmpeg's choice).

    Raises `VideoReadError`, naming the file, if it cannot be opened; a decoding error in the middle of
    a pass raises it too, saying how many frames had been decoded.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int = 0, colour_matrix: str | None = None):
        if colour_matrix not in COLOUR_MATRICES:
            raise ValueError(f"colour_matrix must be one of {sorted(map(str, COLOUR_MATRICES))}, got {colour_matrix!r}")
        self.path = os.fspath(path)
        self.threads = threads
        self._src_colorspace = COLOUR_MATRICES[colour_matrix]
        container, stream = _open(self.path, threads)
        with container:
            self.info = self._read_info(container, stream)

    def _read_info(self, container, stream) -> VideoInfo:
        rate = stream.average_rate or stream.guessed_rate
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        return VideoInfo(
            path=self.path,
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            frame_rate=Fraction(rate) if rate else None,
            frame_count=stream.frames or None,  # 0 means "not recorded"
            duration_s=duration,
            time_base=Fraction(stream.time_base),
        )

    def to_rgb(self, frame: "av.VideoFrame") -> np.ndarray:
        """`[H, W, 3] uint8` RGB of a decoded frame, with this reader's colour matrix."""
        return frame.to_ndarray(format="rgb24", src_colorspace=self._src_colorspace)

    def decoded(self) -> Iterator[tuple[int, "av.VideoFrame"]]:
        """Yields `(index, frame)` for every frame of the stream in order, undecoded to RGB (cheap to
        skip). The index counts the frames the decoder has returned, from 0."""
        container, stream = _open(self.path, self.threads)
        with container:
            index = -1
            try:
                for index, frame in enumerate(container.decode(stream)):
                    yield index, frame
            except (av.error.FFmpegError, OSError) as e:
                raise VideoReadError(f"{self.path}: decoding failed after {index + 1} frame(s) ({_describe(e)})") from e

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yields `(index, [H, W, 3] uint8 RGB)` for every frame."""
        for index, frame in self.decoded():
            yield index, self.to_rgb(frame)

    def frames_at(self, indices: Iterable[int], *, on_decoded: Callable[[int], None] | None = None
                  ) -> "FrameSelection":
        """The frames at `indices` (any order, repeats allowed), yielded once each in increasing order;
        see `FrameSelection`. `on_decoded(index)`, if given, is called for every frame decoded (a
        progress bar), wanted or not."""
        return FrameSelection(self, indices, on_decoded)


class FrameSelection:
    """One decode-and-count pass that yields `(index, [H, W, 3] uint8 RGB)` for the requested indices.

    Decoding stops as soon as the last requested frame has been yielded, so a request near the start
    of a long film costs only that start. After the loop has run to its end:

      * `past_end`: the requested indices at or beyond the end of the stream (empty if all were found);
      * `decoded`: the number of frames decoded;
      * `frame_count`: the stream's length by count if the pass reached its end, else None;
      * `timestamp_mismatches`: `(index, timestamp_index)` for yielded frames whose timestamp, times the
        frame rate, does not round to their counted index (measured from the first frame's timestamp).
        A seek by timestamp, as OpenCV's `CAP_PROP_POS_FRAMES` does, would land elsewhere for these:
        variable frame rate, dropped or duplicated frames, or timestamp gaps.

    A selection is one pass; iterate it once.
    """

    def __init__(self, reader: VideoReader, indices: Iterable[int], on_decoded: Callable[[int], None] | None = None):
        wanted = set()
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
                raise ValueError(f"frame indices are integers >= 0, got {i!r}")
            wanted.add(int(i))
        self.requested = sorted(wanted)
        self.past_end: list[int] = []
        self.decoded = 0
        self.frame_count: int | None = None
        self.timestamp_mismatches: list[tuple[int, int]] = []
        self._reader = reader
        self._on_decoded = on_decoded
        self._used = False

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self._used:
            raise RuntimeError("a FrameSelection is a single pass; ask the reader for a new one")
        self._used = True
        return self._run()

    def _timestamp_index(self, frame, first_pts: int | None) -> int | None:
        rate = self._reader.info.frame_rate
        if frame.pts is None or first_pts is None or not rate:
            return None
        return round((frame.pts - first_pts) * self._reader.info.time_base * rate)

    def _run(self) -> Iterator[tuple[int, np.ndarray]]:
        if not self.requested:
            return
        position = 0  # into self.requested
        first_pts = None
        decoding = self._reader.decoded()
        try:
            for index, frame in decoding:
                self.decoded = index + 1
                if index == 0:
                    first_pts = frame.pts
                if self._on_decoded is not None:
                    self._on_decoded(index)
                if index != self.requested[position]:
                    continue
                by_time = self._timestamp_index(frame, first_pts)
                if by_time is not None and by_time != index:
                    self.timestamp_mismatches.append((index, by_time))
                yield index, self._reader.to_rgb(frame)
                position += 1
                if position == len(self.requested):
                    return  # the last wanted frame: stop decoding here
            self.frame_count = self.decoded
            self.past_end = self.requested[position:]
        finally:
            decoding.close()  # closes the file now, also when the caller stops early
