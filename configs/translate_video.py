"""Translate a video with a Scenimefy translator (docs/video.md).

    python -m scenimefy_jax.main --config=configs/translate_video.py \
        --config.checkpoint=pretrained/Shinkai_net_G.pth --config.input=clip.mp4 --config.output=anime.mp4
    python -m scenimefy_jax.main --config=configs/translate_video.py:demo   # no downloads, random weights

Frames keep the source size (reflect-padded to multiples of 4 for the network, then cropped back),
frame rate and timestamps; the first audio stream is copied (or re-encoded to AAC where the container
cannot take it). `:demo` writes a synthetic 190x106 clip with a tone under runs/translate_video_demo/
and translates it with a small random translator: it shows the job; the pictures mean nothing.
"""
import ml_collections

from scenimefy_jax.parallel import distributed


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "translate_video"
    # The job runs on one host; config.distributed is here so that main.py treats every job alike.
    config.distributed = distributed.config_defaults()
    config.checkpoint = ""  # official *_net_G.pth, a converted/exported model directory, or "random"
    config.input = ""  # the video file to translate
    config.output = ""  # the video file to write (its extension picks the container: .mp4, .mkv, .mov)
    config.overwrite = False  # replace an existing output (otherwise the job refuses, exit status 2)
    config.batch_size = 8  # frames translated at once
    config.dtype = "float32"  # "float32" (matches the official outputs) or "bfloat16" (faster on TPU/GPU)
    config.smoothing = 0.0  # EMA weight of the previous frames' InstanceNorm statistics, in [0, 1); 0: off
    config.codec = "libx264"  # FFmpeg video encoder (libx264rgb with pix_fmt rgb24 and crf 0: lossless RGB)
    config.pix_fmt = "yuv420p"  # encoder pixel format (odd-sized videos fall back to yuv444p)
    config.crf = 18  # x264 constant rate factor: 0 lossless, 18 visually lossless, 23 x264's default
    config.preset = "medium"  # x264 speed/size trade-off (ultrafast ... veryslow)
    config.audio = "auto"  # "auto": copy the first audio stream, AAC if the container refuses it; "aac"; "none"
    config.decode_threads = 0  # decoder threads (0: FFmpeg's choice); decoding runs beside the network
    config.random_ngf = 8  # checkpoint="random" only: generator width ...
    config.random_blocks = 2  # ... and residual blocks (64 and 9 are the released translator's)
    config.progress = True  # show a progress bar (frames/s)

    if variant == "demo":
        config.checkpoint = "random"
        config.input = "runs/translate_video_demo/clip.mp4"
        config.output = "runs/translate_video_demo/anime.mp4"
        config.overwrite = True
        config.demo_frames = 48  # synthetic clip written (once) at config.input: 3.2 s at 15 frames/s
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/translate_video.py (known: demo)")
    return config
