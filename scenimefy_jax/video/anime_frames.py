"""The Shinkai anime-scene data set (domain B) cut out of the films by the official frame list.

    python tools/extract_anime_frames.py --frame-list frameList.json --movies films/ --output anime_scenes/

The official `Anime_dataset/frameList.json` maps each film's name to the frame numbers to take
(1,986 frames of 9 films). As the official `frame_extract.py --crop` does (docs/reference.md §7),
every frame gives three maximal squares, left (x = 0), centre (x = (W-H)//2) and right (x = W-H),
written into one folder as `movie_<k>_frame_<n>_<c>.png`: k is the film's index in the list's order,
n the frame number, c = 0, 1, 2 the crop. A film is the file `<name>.mp4` or `<name>.mkv` in the
movie folder, `<name>` exactly the list's key.

Where this differs from the official tool, on purpose:

  * Frame n is the n-th frame the decoder returns, counted from 0 (`reader.FrameSelection`), not a
    seek by timestamp through OpenCV's `CAP_PROP_POS_FRAMES`.
  * k is the film's position in the list even when earlier films are missing (the official counter
    skips missing films, so the names of later films would change once those turn up).
  * Every PNG is written under a temporary name in the output folder and renamed (`images.save_png`),
    so an interrupted run leaves only complete files; a rerun skips the files that exist and does not
    decode a film whose outputs all exist.
  * A film that is missing or unreadable, or shorter than a requested frame, is reported and the rest
    is still extracted (`ExtractionReport`; the tool then exits with status 1).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from typing import Sequence

import numpy as np
from absl import logging
from tqdm import tqdm

from scenimefy_jax.data import images as image_ops
from scenimefy_jax.data.image_files import ConfigError

VIDEO_EXTENSIONS = (".mp4", ".mkv")
"""Movie file extensions, tried in this order (the official tool's)."""

CROPS = ("left", "centre", "right")
"""The crop numbers c = 0, 1, 2 of the output names."""


# ----------------------------------------------------------------------------- the frame list

def _no_duplicate_keys(path: str):
    def pairs_to_dict(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise ConfigError(f"{path}: film {key!r} is listed twice")
            seen[key] = value
        return seen

    return pairs_to_dict


def read_frame_list(path: str | os.PathLike) -> dict[str, list[int]]:
    """`{film name: sorted distinct frame numbers}` in the file's order of films.

    The file is a JSON object mapping each film's name (the movie's file name without extension) to a
    list of frame numbers >= 0 (docs/reference.md §7). Raises `ConfigError`, one line naming the file,
    for anything else.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"frame list {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"frame list {path}: cannot be read ({e})") from e
    try:
        films = json.loads(text, object_pairs_hook=_no_duplicate_keys(path))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    return check_frame_list(films, path)


def check_frame_list(films, source: str = "frame list") -> dict[str, list[int]]:
    """`read_frame_list`'s checks on an already parsed list; `source` names it in the error."""
    if not isinstance(films, dict) or not films:
        got = type(films).__name__ if films or not isinstance(films, dict) else "an empty object"
        raise ConfigError(f"{source}: expected a JSON object mapping film names to lists of frame numbers, got {got}")
    frame_list = {}
    for name, frames in films.items():
        if not isinstance(name, str) or not name or name != os.path.basename(name) or name in (".", ".."):
            raise ConfigError(f"{source}: film name {name!r} is not a plain file name")
        if not isinstance(frames, (list, tuple)):
            raise ConfigError(f"{source}: film {name!r}: expected a list of frame numbers, got {type(frames).__name__}")
        bad = [n for n in frames if isinstance(n, bool) or not isinstance(n, int) or n < 0]
        if bad:
            raise ConfigError(f"{source}: film {name!r}: frame numbers are integers >= 0, got {bad[0]!r}")
        frame_list[name] = sorted(set(frames))  # a frame listed twice gives the same three files
    return frame_list


# ----------------------------------------------------------------------------- files and crops

def output_name(film_index: int, frame: int, crop: int) -> str:
    """`movie_<k>_frame_<n>_<c>.png` (docs/reference.md §7). The film index keeps equal frame numbers of
    different films apart (before February 2025 the official names lacked it and such frames collided)."""
    return f"movie_{film_index}_frame_{frame}_{crop}.png"


def crop_squares(frame: np.ndarray) -> list[np.ndarray]:
    """The three maximal squares of a `[H, W, C]` frame with W >= H: `[H, H, C]` views at x = 0,
    (W-H)//2 and W-H, the official `--crop` positions (docs/reference.md §7)."""
    height, width = frame.shape[:2]
    if width < height:
        raise ValueError(f"frame is {width}x{height}: taller than wide, no {height}x{height} square fits")
    return [frame[:, x:x + height] for x in (0, (width - height) // 2, width - height)]


def find_movie(movies_dir: str, name: str) -> str | None:
    """`<movies_dir>/<name>.mp4`, else `.mkv`, if that is a file; None otherwise."""
    for ext in VIDEO_EXTENSIONS:
        path = os.path.join(movies_dir, name + ext)
        if os.path.isfile(path):
            return path
    return None


def near_misses(name: str, names_here: Sequence[str]) -> list[str]:
    """The names among `names_here` that would be the film's file but for letter case."""
    wanted = {(name + ext).casefold() for ext in VIDEO_EXTENSIONS}
    return [n for n in names_here if n.casefold() in wanted]


def _check_output(output_dir: str) -> None:
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as e:
        raise ConfigError(f"output folder {output_dir}: not writable ({e.strerror or e})") from e


# ----------------------------------------------------------------------------- the report

@dataclasses.dataclass
class ExtractionReport:
    """What one run did. Files are counted one per crop; `skipped` ones existed before the run."""

    output_dir: str
    films: int = 0
    written: int = 0
    skipped: int = 0
    decoded_frames: int = 0
    seconds: float = 0.0
    complete_films: list[str] = dataclasses.field(default_factory=list)  # every output existed: not decoded
    missing_films: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # film -> names differing in case
    unreadable_films: dict[str, str] = dataclasses.field(default_factory=dict)  # film -> reason
    past_end: dict[str, tuple[int, list[int]]] = dataclasses.field(default_factory=dict)  # film -> (length, frames)
    timestamp_mismatches: dict[str, int] = dataclasses.field(default_factory=dict)  # film -> frames

    @property
    def failed(self) -> bool:
        return bool(self.missing_films or self.unreadable_films or self.past_end)

    @property
    def exit_status(self) -> int:
        """0 when everything listed is in the output folder, 1 when some inputs failed."""
        return 1 if self.failed else 0

    def summary(self) -> list[str]:
        """The report as lines for a person: each failure by film, then the totals."""
        lines = []
        for name, near in self.missing_films.items():
            hint = f"; rename {' or '.join(map(repr, near))}?" if near else ""
            lines.append(f"missing film: {name!r} (no {' or '.join(name + e for e in VIDEO_EXTENSIONS)} "
                         f"in the movie folder{hint})")
        for name, reason in self.unreadable_films.items():
            lines.append(f"unreadable film: {name!r}: {reason}")
        for name, (length, frames) in self.past_end.items():
            shown = ", ".join(map(str, frames[:10])) + (", ..." if len(frames) > 10 else "")
            lines.append(f"past the end: {len(frames)} frame(s) of {name!r}, which has {length} frames: {shown}")
        for name, count in self.timestamp_mismatches.items():
            lines.append(f"note: {count} frame(s) of {name!r} sit elsewhere by timestamp than by count (variable "
                         "frame rate?); the official tool's OpenCV seek may have taken other frames there")
        failed = len(self.missing_films) + len(self.unreadable_films)
        past_end = sum(len(frames) for _, frames in self.past_end.values())
        lines.append(f"films: {self.films} listed, {failed} failed ({len(self.missing_films)} missing, "
                     f"{len(self.unreadable_films)} unreadable), {len(self.complete_films)} already complete "
                     f"(not decoded); {past_end} frame(s) past the end of their film")
        speed = f" ({self.decoded_frames / self.seconds:.0f} frames/s)" if self.seconds > 0 and self.decoded_frames else ""
        lines.append(f"files: {self.written} written, {self.skipped} skipped (existed) in {self.output_dir}; "
                     f"decoded {self.decoded_frames} frames in {self.seconds:.1f} s{speed}")
        return lines


# ----------------------------------------------------------------------------- the extraction

def _missing_crops(film_index: int, frames: Sequence[int], existing: set[str]) -> dict[int, list[int]]:
    """`{frame: crop numbers whose file is absent}` for the frames with any absent."""
    todo = {}
    for frame in frames:
        crops = [c for c in range(len(CROPS)) if output_name(film_index, frame, c) not in existing]
        if crops:
            todo[frame] = crops
    return todo


def _extract_film(reader, film_index: int, name: str, todo: dict[int, list[int]], output_dir: str,
                  report: ExtractionReport, progress: bool) -> None:
    """Decodes the film up to its last missing frame and writes the missing crops of each."""
    bar = tqdm(total=max(todo) + 1, unit="frame", desc=f"{film_index} {name}", disable=not progress,
               mininterval=1.0)
    selection = reader.frames_at(todo, on_decoded=lambda _: bar.update(1))
    try:
        for frame_number, rgb in selection:
            squares = crop_squares(rgb)
            for crop in todo[frame_number]:
                image_ops.save_png(np.ascontiguousarray(squares[crop]),
                                   os.path.join(output_dir, output_name(film_index, frame_number, crop)))
                report.written += 1
    finally:
        bar.close()
        report.decoded_frames += selection.decoded
    if selection.past_end:
        report.past_end[name] = (selection.frame_count, selection.past_end)
    if selection.timestamp_mismatches:
        report.timestamp_mismatches[name] = len(selection.timestamp_mismatches)


def extract_anime_frames(frame_list: str | os.PathLike | dict[str, Sequence[int]], movies_dir: str | os.PathLike,
                         output_dir: str | os.PathLike, *, threads: int = 0, colour_matrix: str | None = None,
                         progress: bool = True) -> ExtractionReport:
    """Writes the three crops of every listed frame into `output_dir`; returns what it did.

    `frame_list` is the path of a frameList.json (or its parsed `{film: frames}`); `threads` and
    `colour_matrix` go to `reader.VideoReader`. Raises `ConfigError` (one line naming the file or
    folder) for a bad frame list, a missing movie folder or an output folder that cannot be written;
    a missing, unreadable or too short film is recorded in the report, and the others are extracted.
    """
    from scenimefy_jax.video.reader import COLOUR_MATRICES, VideoReader, VideoReadError

    if colour_matrix not in COLOUR_MATRICES:
        raise ConfigError(f"colour matrix {colour_matrix!r}: not one of {', '.join(map(str, COLOUR_MATRICES))}")
    if isinstance(frame_list, dict):
        films = check_frame_list(frame_list)
    else:
        films = read_frame_list(frame_list)
    movies_dir, output_dir = os.fspath(movies_dir), os.fspath(output_dir)
    if not os.path.isdir(movies_dir):
        raise ConfigError(f"movie folder {movies_dir}: no such folder")
    _check_output(output_dir)

    report = ExtractionReport(output_dir=output_dir, films=len(films))
    existing = set(os.listdir(output_dir))
    movie_names = sorted(os.listdir(movies_dir))
    start = time.perf_counter()
    # k is the position in the list, whatever is missing (the official counter skips absent films).
    for film_index, (name, frames) in enumerate(films.items()):
        todo = _missing_crops(film_index, frames, existing)
        report.skipped += len(frames) * len(CROPS) - sum(len(c) for c in todo.values())
        if not todo:
            report.complete_films.append(name)
            continue
        path = find_movie(movies_dir, name)
        if path is None:
            report.missing_films[name] = near_misses(name, movie_names)
            logging.warning("film %r: no %s in %s", name, " or ".join(name + e for e in VIDEO_EXTENSIONS), movies_dir)
            continue
        logging.info("film %d %r: %d frame(s) to extract from %s", film_index, name, len(todo), path)
        try:
            reader = VideoReader(path, threads=threads, colour_matrix=colour_matrix)
            if reader.info.width < reader.info.height:
                raise VideoReadError(f"{path}: frames are {reader.info.width}x{reader.info.height}, taller than "
                                     "wide; the crops need W >= H")
            _extract_film(reader, film_index, name, todo, output_dir, report, progress)
        except VideoReadError as e:
            report.unreadable_films[name] = str(e)
            logging.error("film %r: %s", name, e)
        except OSError as e:  # a PNG that cannot be written: the output folder filled up, say
            raise ConfigError(f"output folder {output_dir}: cannot write ({e})") from e
    report.seconds = time.perf_counter() - start
    return report

