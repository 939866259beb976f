"""FID and KID of generated (or translated) images against real ones (docs/reference.md §6.1).

    # two folders (real may also be a statistics .npz, e.g. written by pytorch-fid --save-stats)
    python -m scenimefy_jax.main --config=configs/evaluate.py \
        --config.inception=pretrained/pt_inception-2015-12-05-6726825d.pth \
        --config.fake=results/anime --config.real=datasets/anime_test --config.output=eval/run1
    # a translator and photos: translate in memory, then measure
    python -m scenimefy_jax.main --config=configs/evaluate.py \
        --config.inception=pretrained/pt_inception-2015-12-05-6726825d.pth \
        --config.translator=pretrained/Shinkai_net_G.pth --config.photos=datasets/photos_test \
        --config.real=datasets/anime_test --config.output=eval/shinkai
    # reference statistics only (as pytorch-fid --save-stats)
    python -m scenimefy_jax.main --config=configs/evaluate.py --config.inception=... \
        --config.real=datasets/anime_test --config.save_stats=anime_test_stats.npz
    python -m scenimefy_jax.main --config=configs/evaluate.py:demo      # no downloads, random networks

Writes `<output>/results.json` (fid, kid_mean, kid_std, n_fake, n_real, protocol, the checkpoints'
SHA-256, skipped files) and prints a short table. `:demo` writes a small procedural photo/anime set and
measures a random translator with a random Inception: it shows the job; its numbers mean nothing.
"""
import ml_collections

from scenimefy_jax.parallel import distributed


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "evaluate"
    # Several hosts (TPU pod slice, SLURM, ...): docs/multihost.md. Default: join a detected cluster, else one host.
    config.distributed = distributed.config_defaults()
    config.inception = ""  # pt_inception-2015-12-05-6726825d.pth, a converted directory, or "random" (meaningless)
    config.fake = ""  # folder (or glob) of generated images; or use translator + photos instead
    config.translator = ""  # a translator (*_net_G.pth or a converted / exported directory) ...
    config.photos = ""  # ... and the photos it translates (folder or glob); nothing is written unless save_images
    config.real = ""  # folder (or glob) of real images, or a statistics .npz (mu, sigma[, features])
    config.output = ""  # folder receiving results.json ("" with save_stats alone: nothing else written)
    config.protocol = "pytorch_fid"  # "pytorch_fid" (bilinear to 299, [-1, 1]) or "clean" (clean-fid's float bicubic)
    config.batch_size = 0  # Inception batch over all local devices; 0: 50 on GPU/TPU, 1 per device on CPU (fastest there)
    config.dtype = "float32"  # "float32" (comparable numbers) or "bfloat16" (faster; not comparable)
    config.kid_subsets = 100  # KID: subsets (torch-fidelity default 100)
    config.kid_subset_size = 1000  # KID: samples per subset (default 1000; shrunk to the smaller set if needed)
    config.kid_seed = 2020  # KID: seed of the subset draws (torch-fidelity default)
    config.cache = "auto"  # reference features cache: "auto" = ~/.cache/scenimefy_jax/fid, "" = off, or a folder
    config.save_stats = ""  # write the real set's statistics (and features) to this .npz
    config.save_images = ""  # translator mode: also write the translations into this folder
    config.translator_batch_size = 8  # translator mode: photos translated at once
    config.translator_dtype = "float32"  # translator mode: "float32" or "bfloat16"
    config.max_side = 0  # translator mode: shrink photos whose longer side exceeds this first (0: off)
    config.decode_workers = 2  # threads decoding and resizing images ahead of the network
    config.progress = True  # progress bars

    if variant == "demo":
        config.inception = "random"
        config.translator = "random"
        config.photos = "runs/evaluate_demo/data/photos"
        config.real = "runs/evaluate_demo/data/anime"
        config.output = "runs/evaluate_demo"
        config.kid_subset_size = 50
        config.demo_images = 64  # procedural photos and anime images written (once) for the demo
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/evaluate.py (known: demo)")
    return config
