"""Pseudo pairs: the same latent through the source and the fine-tuned StyleGAN2, kept when Mask2Former
sees the same layout in both (docs/reference.md §3.3-3.6).

    python -m scenimefy_jax.main --config=configs/pseudo_pairs.py \
        --config.source=pretrained/lhq-220000.pt --config.target=runs/shinkai_stylegan/generator \
        --config.segmenter=pretrained/model_final_503e96.pkl --config.num_pairs=30000 \
        --config.output=datasets/pair_s2a
    python -m scenimefy_jax.main --config=configs/pseudo_pairs.py:demo   # no downloads, CPU, ~1 minute

`source` / `target`: rosinality `.pt` files or converted / exported `stylegan2` directories;
`segmenter`: anything `Segmenter.from_checkpoint` reads. The output (`trainA/`, `trainB/` with identical
names) is what `configs/i2i.py --config.data.paired=<output>` trains on. Running the same command again
resumes an interrupted run and gives the data set an uninterrupted run gives. Defaults are the
official `generate_pair.py` (truncation 0.7, thresholds 5.0 / 1, independent noise, unclamped 256 px
segmenter input); P1-P3 (docs/reference.md §3.6) are the switches `share_noise`,
`clamp_segmenter_input`, `segment_size`.

`:demo` uses what `configs/stylegan_finetune.py:demo` leaves in runs/stylegan_finetune_demo/ (or small
random generators when that is absent) with a tiny random segmenter and `top_fraction` selection: it
shows the pipeline; with a random segmenter the choices mean nothing. `:tiny` is the test size.
"""
import os

import ml_collections

from scenimefy_jax.parallel import distributed


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "pseudo_pairs"
    # Several hosts (TPU pod slice, SLURM, ...): docs/multihost.md. Default: join a detected cluster, else one host.
    config.distributed = distributed.config_defaults()
    config.source = ""  # G_s: rosinality .pt (g_ema) or a converted stylegan2 directory (e.g. lhq-220000.pt)
    config.target = ""  # G_t: the fine-tuned generator (e.g. <stylegan_finetune workdir>/generator)
    config.segmenter = ""  # model_final_503e96.pkl, a Hugging Face Mask2Former folder, or a converted directory
    config.output = ""  # folder receiving trainA/, trainB/, pairs.jsonl, summary.json, grids
    config.num_pairs = 30000  # accepted pairs to produce (the released set has 30,000)
    config.overwrite = False  # True: delete an existing output's pairs and start again

    # ---- candidates (docs/reference.md §3.3) ------------------------------------------------------------
    config.seed = 0  # candidate i draws z = normal(fold_in(key(seed), i)) unless latents / seeds are given
    config.latents = ""  # a .npy of z [N, style_dim]: candidate i is row i (the run stops after N)
    config.seeds = ""  # or e.g. "0-999": candidate i is z_from_seed(seeds[i]), as configs/sample.py
    config.max_candidates = 0  # stop after this many candidates (0: 50 x num_pairs), so a run never hangs
    config.truncation = 0.7  # psi towards the source w_avg (generate_pair.py: 0.7)
    config.truncation_mean = 4096  # z's averaged for w_avg (official: 4096)
    config.truncation_seed = 0  # PRNG seed of those z's
    config.noise = "random"  # "random": per-layer noise per candidate (official); "fixed": stored noise buffers
    config.noise_seed = 0  # candidate i's noise comes from fold_in(key(noise_seed), i)
    config.share_noise = False  # P1: official False (G_s and G_t draw independent noise); True: one draw for both
    config.clamp_segmenter_input = False  # P2: official False (round((x+1)*255/2) unclamped); True: clamp to 0..255
    config.segment_size = 0  # P3: 0 = segment at the generator's 256 px (official); e.g. 640 = upscale first

    # ---- selection (docs/reference.md §3.4) -------------------------------------------------------------
    config.selection = "official"  # "official" (thresholds), "top_fraction" (best q per batch), "none" (keep all)
    config.seg_loss_th = 5.0  # official: accept iff seg_loss < 5.0 ...
    config.seg_cat_th = 1  # ... and the photo shows more than 1 class
    config.top_fraction = 0.5  # q of "top_fraction"

    # ---- running ----------------------------------------------------------------------------------------
    # Candidates per jitted step (global, split over all devices); it fixes the batch boundaries, so a
    # restart must keep it. On a GPU/TPU larger is faster; on a CPU 1 is (benchmarks/pseudo_pairs_cpu.json).
    config.batch_size = 8
    config.segmenter_dtype = "float32"  # "float32" (official scores) or "bfloat16" (faster on TPU/GPU)
    config.write_workers = 4  # threads writing PNGs while the next batch computes
    config.progress = True  # show a progress bar
    # Demo only: small random-weight networks instead of checkpoints (their choices mean nothing).
    config.random_generators = False
    config.random_segmenter = False
    config.demo_size = 64  # resolution of the random generators

    if variant in ("demo", "tiny"):
        finetuned = os.path.join("runs", "stylegan_finetune_demo")
        have = all(os.path.isdir(os.path.join(finetuned, d)) for d in ("source", "generator"))
        config.output = "runs/pseudo_pairs_demo"
        config.num_pairs = 48
        config.batch_size = 8
        config.selection = "top_fraction"
        config.random_segmenter = True
        config.truncation_mean = 512
        if have and variant == "demo":
            config.source = os.path.join(finetuned, "source")
            config.target = os.path.join(finetuned, "generator")
        else:
            config.random_generators = True
        if variant == "tiny":  # the test size: seconds
            config.output = "runs/pseudo_pairs_tiny"
            config.num_pairs = 6
            config.batch_size = 8
            config.demo_size = 16
            config.truncation_mean = 64
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/pseudo_pairs.py (known: demo, tiny)")
    return config
