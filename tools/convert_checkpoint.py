"""Convert a published PyTorch checkpoint to a scenimefy_jax model directory (Orbax + metadata).

    python tools/convert_checkpoint.py Shinkai_net_G.pth converted/shinkai_G
    python tools/convert_checkpoint.py some_file.pth out/ --kind translator
    python tools/convert_checkpoint.py model_final_503e96.pkl models/mask2former      # detectron2
    python tools/convert_checkpoint.py mask2former-swin-base-ade-semantic/ models/m2f  # HF folder

The kind is detected from the keys; `--kind` forces one (and then every missing, unexpected or
mis-shaped key is listed if the file does not match). PyTorch files are read with
`weights_only=True`, detectron2 `.pkl` files with an unpickler that rebuilds numpy arrays only.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scenimefy_jax import convert, model_io  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="PyTorch checkpoint (.pth / .pt / .bin), detectron2 .pkl, or Hugging Face folder")
    parser.add_argument("output", help="output directory (must not exist unless --overwrite)")
    parser.add_argument("--kind", choices=convert.kinds(), help="checkpoint kind (default: detect from keys)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    args = parser.parse_args(argv)

    if os.path.exists(args.output) and not args.overwrite:
        print(f"error: {args.output} already exists (use --overwrite to replace it)", file=sys.stderr)
        return 2
    if not os.path.exists(args.source):
        print(f"error: {args.source}: no such file or directory", file=sys.stderr)
        return 2
    try:
        converted = convert.convert_file(args.source, kind=args.kind)
    except (convert.CheckpointError, ValueError) as e:  # corrupt, or not a checkpoint this converts
        print(f"error: {e}", file=sys.stderr)
        return 2  # the README's convention: a bad file given on the command line
    source = {
        "file": os.path.basename(args.source),
        "path": os.path.abspath(args.source),
        "sha256": convert.checkpoint_sha256(args.source),
    }
    out = model_io.save_model(
        args.output,
        kind=converted.kind,
        params=converted.params,
        architecture=converted.architecture,
        source=source,
        overwrite=args.overwrite,
    )
    import jax

    n = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(converted.params))
    print(f"converted {args.source} ({converted.kind}, {n:,} parameters, sha256 {source['sha256'][:12]}...) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
