"""Packs the Scenimefy image folders into a tensorflow-datasets array_record data set (no TensorFlow).

    python tools/build_dataset.py --unpaired datasets/unpaired_s2a --paired datasets/pair_s2a \
        --output datasets/packed [--resize 256] [--workers 8]

Then train from it with `--config.data.packed=datasets/packed/scenimefy_folders/1.0.0` (the path is
printed at the end). Unreadable images are reported by name and left out (a pair is left out of both
paired splits).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scenimefy_jax.data.packed import build_packed_dataset  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unpaired", required=True, help="folder with trainA/ (photos) and trainB/ (anime)")
    parser.add_argument("--paired", required=True, help="folder with trainA/ and trainB/ holding the same file names")
    parser.add_argument("--output", required=True, help="tfds data directory to write into")
    parser.add_argument("--resize", type=int, default=None,
                        help="store images bicubically resized to RESIZE x RESIZE (the training image size)")
    parser.add_argument("--workers", type=int, default=0, help="decoding processes (default: all CPU cores)")
    args = parser.parse_args(argv)
    summary = build_packed_dataset(args.unpaired, args.paired, args.output, resize=args.resize, workers=args.workers)
    for split, names in summary["skipped"].items():
        for name in names:
            print(f"skipped ({split}): {name}", file=sys.stderr)
    print(json.dumps(summary["counts"]))
    print(f"packed data set: {summary['data_dir']}\ntrain with: --config.data.packed={summary['data_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
