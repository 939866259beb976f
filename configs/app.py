"""A local web page that translates a dropped photo and shows it beside the photo (docs/app.md).

    python -m scenimefy_jax.main --config=configs/app.py \
        --config.checkpoint=pretrained/Shinkai_net_G.pth --config.port=8000
    python -m scenimefy_jax.main --config=configs/app.py:demo    # a small random translator, no downloads

Then open http://127.0.0.1:8000/. `checkpoint`, `dtype` and `max_side` mean what they mean in
configs/translate.py; photos go through the same processing (max_side shrink, sides rounded to multiples of 4).
"""
import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "app"
    config.checkpoint = ""  # official *_net_G.pth, a converted/exported model directory, or "random" (demo)
    config.host = "127.0.0.1"  # address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 every interface
    config.port = 8000  # TCP port (0: any free port; the log names the one chosen)
    config.dtype = "float32"  # "float32" (matches the official outputs) or "bfloat16" (faster on TPU/GPU)
    # Shrink photos whose longer side exceeds this first (0: off). Unlike the translate job's default (0),
    # on: a 12-megapixel phone photo would take minutes on a CPU. The model was trained at 256.
    config.max_side = 1024

    if variant == "demo":
        config.checkpoint = "random"  # ngf 8, 2 blocks, N(0, 0.02) weights: outputs are noise, but it runs
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/app.py (known: demo)")
    return config
