"""Flicker of translated video with and without InstanceNorm smoothing, and translation speed (docs/video.md).

    python tools/measure_flicker.py                        # writes benchmarks/flicker_cpu.json
    python tools/measure_flicker.py --checkpoint=models/shinkai --frames=48

The clip is synthetic: a slow horizontal pan (0.5 px per frame by default) over a procedural landscape
(`translate_video.pan_frames`). Flicker = mean |y_t - y_{t-1}| over consecutive output frames divided by
the same for the input frames: 1 means the output changes as much as the input, above 1 means the
translation adds frame-to-frame change (pumping colours). Frames are translated in memory with the
job's `FrameTranslator` (no codec in between). Without --checkpoint the translator has random weights
(ngf 64, 9 blocks: the released architecture), so the numbers describe the mechanism, not the model.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scenimefy_jax.video import translate_video as tv  # noqa: E402


def flicker(frames: np.ndarray) -> float:
    """Mean absolute change between consecutive frames, `[T, H, W, 3]` uint8."""
    f = frames.astype(np.float32)
    return float(np.mean(np.abs(f[1:] - f[:-1])))


def translate_all(translator, frames, smoothing: float) -> tuple[np.ndarray, float]:
    """Translated frames and frames/s measured after a warm-up batch (compilation excluded)."""
    run = tv.FrameTranslator(translator, smoothing)
    size = translator.batch_size
    run(list(frames[:size]))  # compile
    run = tv.FrameTranslator(translator, smoothing)
    start = time.perf_counter()
    out = []
    for i in range(0, len(frames), size):
        out.extend(run(list(frames[i:i + size])))
    return np.stack(out), len(frames) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="", help="a translator (default: random weights, ngf 64, 9 blocks)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--speed", type=float, default=0.5, help="pan speed in pixels per frame")
    parser.add_argument("--smoothing", type=float, nargs="+", default=[0.0, 0.5, 0.9])
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--speed_sizes", default="640x360,1280x720", help="sizes whose frames/s are measured ('' none)")
    parser.add_argument("--speed_frames", type=int, default=8)
    parser.add_argument("--output", default="benchmarks/flicker_cpu.json")
    args = parser.parse_args()

    import jax

    from scenimefy_jax.inference import Translator

    if args.checkpoint:
        translator = Translator.from_checkpoint(args.checkpoint, batch_size=args.batch_size)
        weights = args.checkpoint
    else:
        translator = Translator(tv.random_translator_params(64, 9), {"ngf": 64, "n_blocks": 9},
                                batch_size=args.batch_size)
        weights = "random (N(0, 0.02^2) weights, zero biases; ngf 64, 9 blocks): numbers describe the mechanism only"
    frames = np.stack(list(tv.pan_frames(args.width, args.height, args.frames, args.speed)))
    input_flicker = flicker(frames)
    results = {"weights": weights, "clip": {"width": args.width, "height": args.height, "frames": args.frames,
                                            "pan_px_per_frame": args.speed, "input_flicker": input_flicker},
               "flicker": {}, "frames_per_s": {}}
    for a in args.smoothing:
        out, fps = translate_all(translator, frames, a)
        results["flicker"][str(a)] = {"output_flicker": flicker(out), "ratio": flicker(out) / input_flicker,
                                      "frames_per_s": fps}
        print(f"smoothing {a}: flicker ratio {flicker(out) / input_flicker:.3f} ({fps:.2f} frames/s at "
              f"{args.width}x{args.height})", flush=True)
    for size in filter(None, args.speed_sizes.split(",")):
        w, h = (int(v) for v in size.split("x"))
        clip = np.stack(list(tv.pan_frames(w, h, args.speed_frames + args.batch_size, args.speed)))
        for a in (0.0, max(args.smoothing)):
            _, fps = translate_all(translator, clip, a)
            results["frames_per_s"][f"{size} smoothing {a}"] = fps
            print(f"{size} smoothing {a}: {fps:.3f} frames/s", flush=True)
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__,
                          "backend": jax.default_backend(), "devices": jax.device_count(),
                          "batch_size": args.batch_size, "note": "network only (no decoding or encoding)"}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
