"""Export the translator to a portable file: ONNX, jax.export StableHLO, or a model directory (docs/export.md).

    python tools/export_translator.py Shinkai_net_G.pth shinkai.onnx --format onnx
    python tools/export_translator.py Shinkai_net_G.pth shinkai.jax --format jax_export
    python tools/export_translator.py runs/i2i_demo/translator models/demo        # --format orbax (default)

CHECKPOINT is an official *_net_G.pth or a model directory (tools/convert_checkpoint.py, a training
export). The exported function is the generator alone: NHWC float32 images in [-1, 1] whose height and
width are multiples of 4 (at least 8), any batch size and image size unless --batch / --size fix them.
Resizing to a multiple of 4 and the uint8 <-> [-1, 1] conversions are the caller's (docs/export.md).

Exit status: 0 written; 2 for a bad option or checkpoint (one line naming it): an unknown format, an
existing OUT without --overwrite, a missing, corrupt or wrong-kind checkpoint, a missing optional package.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scenimefy_jax import export  # noqa: E402

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def _size_of(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main(argv=None) -> int:
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="official *_net_G.pth or a translator model directory")
    parser.add_argument("out", help="file to write (onnx, jax_export) or directory (orbax)")
    parser.add_argument("--format", default="orbax", choices=export.FORMATS, help="output format (default: orbax)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--batch", type=int, help="fix the batch size (onnx, jax_export; default: dynamic)")
    parser.add_argument("--size", help="fix HEIGHTxWIDTH, multiples of 4 (onnx, jax_export; default: dynamic)")
    parser.add_argument("--platforms", help="jax_export targets, comma-separated (default: cpu,cuda,tpu)")
    args = parser.parse_args(argv)

    platforms = None if args.platforms is None else tuple(p.strip() for p in args.platforms.split(",") if p.strip())
    start = time.perf_counter()
    try:
        out = export.export_translator(
            args.checkpoint, args.out, format=args.format, overwrite=args.overwrite, batch=args.batch,
            size=export.parse_size(args.size), platforms=platforms)
    except export.ExportError as e:  # the request or the checkpoint, named; anything else is a bug (traceback)
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR
    print(f"exported {args.checkpoint} -> {out} ({args.format}, {_size_of(out) / 2**20:.1f} MiB, "
          f"{time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
