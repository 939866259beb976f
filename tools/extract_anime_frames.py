r"""Builds the Shinkai anime-scene data set from the films and the official frame list.

    python tools/extract_anime_frames.py --frame-list Anime_dataset/frameList.json \
        --movies films/ --output datasets/anime_scenes

Each film must be `<name>.mp4` or `<name>.mkv` in --movies, `<name>` exactly as frameList.json spells
it. Every listed frame gives three square crops, `movie_<k>_frame_<n>_<c>.png` (docs/anime_dataset.md).
Run it again to resume: existing files are kept and complete films are not decoded.

Exit status: 0 everything written; 1 some films missing or unreadable, or frames past a film's end
(the rest is written); 2 a bad frame list, movie folder or output folder (one line naming it).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scenimefy_jax.data.image_files import ConfigError  # noqa: E402

USAGE_ERROR = 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frame-list", required=True, metavar="JSON",
                        help="frameList.json: {film name: [frame numbers]} (the official Anime_dataset/frameList.json)")
    parser.add_argument("--movies", required=True, metavar="DIR", help="folder holding <film name>.mp4 or .mkv")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder that receives the PNG crops")
    parser.add_argument("--threads", type=int, default=0, help="decoder threads per film (default 0: FFmpeg's choice)")
    parser.add_argument("--colour-matrix", choices=("tagged", "bt601", "bt709"), default="tagged",
                        help="YUV->RGB matrix: as the film is tagged (default), or bt601 as OpenCV (and so the "
                             "official tool) converts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")

    from absl import logging

    try:
        from scenimefy_jax.video.anime_frames import extract_anime_frames
    except ImportError as e:  # PyAV is an optional extra
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR
    logging.set_verbosity(logging.INFO)
    try:
        report = extract_anime_frames(
            args.frame_list, args.movies, args.output, threads=args.threads,
            colour_matrix=None if args.colour_matrix == "tagged" else args.colour_matrix,
            progress=not args.no_progress)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR
    for line in report.summary():
        print(line)
    return report.exit_status


if __name__ == "__main__":
    sys.exit(main())
