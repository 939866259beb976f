"""Translate photos with a Scenimefy translator.

    python -m scenimefy_jax.main --config=configs/translate.py \
        --config.checkpoint=pretrained/Shinkai_net_G.pth \
        --config.input=photos/ --config.output=anime/

`checkpoint` is the official `*_net_G.pth` or a folder written by `tools/convert_checkpoint.py` or a
training run. Inputs go through the official test-time processing (sides rounded to multiples of 4
with bicubic resampling); `<output>/<stem>.png` is written for each input.
"""
import ml_collections

from scenimefy_jax.parallel import distributed


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "translate"
    # Several hosts (TPU pod slice, SLURM, ...): docs/multihost.md. Default: join a detected cluster, else one host.
    config.distributed = distributed.config_defaults()
    config.checkpoint = ""  # official *_net_G.pth, or a converted/exported model directory
    config.input = ""  # an image file, a folder (its image files), or a glob such as "photos/**/*.jpg"
    config.output = ""  # folder receiving <stem>.png
    config.overwrite = False  # re-translate inputs whose output already exists
    config.batch_size = 8  # images of equal size run together; more uses more memory
    config.dtype = "float32"  # "float32" (matches the official outputs) or "bfloat16" (faster on TPU/GPU)
    config.max_side = 0  # shrink photos whose longer side exceeds this first (0: off); trained at 256
    config.alpha_background = ""  # "R,G,B" to composite transparent pixels onto; "" keeps stored colours
    config.decode_workers = 2  # threads decoding images ahead of the network
    config.progress = True  # show a progress bar
    return config
