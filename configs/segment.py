"""Segment photos into the 150 ADE20K classes with Mask2Former (Swin-B), as Scenimefy's selection does.

    python -m scenimefy_jax.main --config=configs/segment.py \
        --config.checkpoint=pretrained/model_final_503e96.pkl \
        --config.input=photos/ --config.output=segments/

`checkpoint` is the official detectron2 `model_final_503e96.pkl`, a Hugging Face Mask2Former folder
(`config.json` + weights), a bare transformers state dict, or a folder written by
`tools/convert_checkpoint.py`. Each input `<stem>.<ext>` gives `<output>/<stem>_labels.png` (label map in
the ADE20K palette), `<stem>_overlay.png` (the photo under the label colours) and `<stem>_legend.png`
(the classes found, with their share of the pixels); `<output>/legend.json` lists the same per image.
Photos are segmented at their own size, as the official selection segments its 256x256 images
(docs/reference.md §3.4).
"""
import ml_collections

from scenimefy_jax.parallel import distributed


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "segment"
    # Several hosts (TPU pod slice, SLURM, ...): docs/multihost.md. Default: join a detected cluster, else one host.
    config.distributed = distributed.config_defaults()
    config.checkpoint = ""  # model_final_503e96.pkl, a Hugging Face folder, a state dict, or a converted directory
    config.input = ""  # an image file, a folder (its image files), or a glob such as "photos/**/*.jpg"
    config.output = ""  # folder receiving <stem>_labels.png, <stem>_overlay.png, <stem>_legend.png, legend.json
    config.overwrite = False  # re-segment inputs whose outputs already exist
    config.batch_size = 8  # images of equal size run together; more uses more memory
    config.dtype = "float32"  # "float32" (matches the official scores) or "bfloat16" (faster on TPU/GPU)
    config.max_side = 0  # shrink photos whose longer side exceeds this first (0: off; outputs have that size)
    config.overlay_alpha = 0.5  # weight of the label colours in <stem>_overlay.png (0: photo only, 1: labels only)
    config.raw = False  # also write <stem>_labels_raw.png: class indices 0..149 as an 8-bit grayscale PNG
    config.decode_workers = 2  # threads decoding images ahead of the network
    config.progress = True  # show a progress bar
    return config
