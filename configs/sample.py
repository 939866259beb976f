"""Render StyleGAN2 samples (and source/target pairs) from seeds or a .npy of z latents.

    python -m scenimefy_jax.main --config=configs/sample.py \
        --config.checkpoint=pretrained/lhq-220000.pt --config.checkpoint2=pretrained/shinkai-221000.pt \
        --config.seeds=0-15 --config.output=samples/

`checkpoint` / `checkpoint2` are rosinality `.pt` files or directories written by
tools/convert_checkpoint.py. With `checkpoint2`, both generators render `w = source.mapping(z)` with the
source w_avg (as Seg_selection/generate_pair.py) and `<output>/<i>.png` shows the pair side by side.
"""
import ml_collections

from scenimefy_jax.parallel import distributed


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "sample"
    # Several hosts (TPU pod slice, SLURM, ...): docs/multihost.md. Default: join a detected cluster, else one host.
    config.distributed = distributed.config_defaults()
    config.checkpoint = ""  # source generator: rosinality .pt (g_ema used) or converted model directory
    config.checkpoint2 = ""  # optional target generator rendered from the same w's, side by side
    config.seeds = "0-7"  # z_i = numpy default_rng(seed).standard_normal(style_dim); e.g. "0-7" or "1,5,9"
    config.latents = ""  # a .npy of z latents [N, style_dim]; overrides seeds
    config.truncation = 0.7  # psi; generate_pair.py uses 0.7; 1.0 disables truncation
    config.truncation_mean = 4096  # number of z's averaged for w_avg (docs/reference.md §3.3)
    config.truncation_seed = 0  # PRNG seed of those z's (jax.random)
    config.noise = "fixed"  # "fixed": the checkpoint's stored noise buffers; "random": fresh noise per batch
    config.noise_seed = 0  # PRNG seed of random noise (per batch: fold_in(seed, batch index))
    config.batch_size = 8  # latents rendered together
    config.output = ""  # folder receiving <i>.png (i from 0) and grid.png
    config.grid = True  # also write grid.png
    config.grid_columns = 8
    config.grid_max = 64  # at most this many images in the grid
    config.conv_impl = "batched"  # modulated conv implementation: "batched" (fastest on CPU), "grouped", "vmap"
    config.progress = True  # show a progress bar
    return config
