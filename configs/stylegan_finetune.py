"""Semantic-constrained StyleGAN2 fine-tuning, source (landscape) G_s -> target (anime) G_t (docs/reference.md §4).

    python -m scenimefy_jax.main --config=configs/stylegan_finetune.py \
        --config.source_checkpoint=pretrained/lhq-220000.pt --config.data.folder=datasets/shinkai_scenes \
        --config.vgg_checkpoint=pretrained/vgg19-dcbb9e9d.pth --config.clip_model=pretrained/clip-vit-base-patch32 \
        --config.workdir=runs/shinkai_stylegan
    python -m scenimefy_jax.main --config=configs/stylegan_finetune.py:demo   # no downloads, CPU, ~4 minutes

Then render source/target pairs with configs/sample.py (`--config.checkpoint=<source>
--config.checkpoint2=<workdir>/generator`). Running the same command again resumes from the latest
checkpoint in `workdir`.

Defaults are the authors' script (docs/reference.md §4.4): FreezeG 3, content 0.01, CLIP 1.0, patch 0.05 with 16
crops of 32 px and tau 1.0, style mixing 0.9, R1 gamma 10 every 16 steps, lr 0.002 with the lazy
regularisation scaling, G_ema decay 0.5 ** (32 / 10000), batch 16, 1,000 steps (221000 - 220000).
"""
import ml_collections

from scenimefy_jax.parallel import distributed


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "stylegan_finetune"
    # Several hosts (TPU pod slice, SLURM, ...): docs/multihost.md. Default: join a detected cluster, else one host.
    config.distributed = distributed.config_defaults()
    config.workdir = "runs/stylegan_finetune"  # checkpoints/, metrics.jsonl, images/, tensorboard/, generator/
    config.seed = 0  # z's, noise, crops, data order

    # ---- weights ------------------------------------------------------------------------------
    config.source_checkpoint = ""  # rosinality .pt (lhq-220000.pt) or a converted stylegan2 directory
    config.vgg_checkpoint = ""  # torchvision vgg19-dcbb9e9d.pth or a converted vgg19 directory
    config.clip_model = ""  # Hugging Face CLIP folder (openai/clip-vit-base-patch32: config.json + weights)
    config.allow_random_feature_nets = False  # True: random VGG19 / small random CLIP when no weights (demo only)
    # The small CLIP built when allow_random_feature_nets and no clip_model (a ViT of these sizes).
    config.random_clip = ml_collections.ConfigDict(dict(
        image_size=32, patch_size=8, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
        projection_dim=32))

    # ---- data (docs/reference.md §4.2) ---------------------------------------------------------------------
    config.data = ml_collections.ConfigDict()
    config.data.folder = ""  # anime images (any layout below it); "" = the procedural demo data set
    config.data.image_size = 256  # must equal the generator size: shorter side resized (LANCZOS), centre crop
    config.data.flip = True  # official RandomHorizontalFlip
    config.data.num_workers = 2  # decoding processes (0: decode in the training process)
    config.data.max_unreadable_in_a_row = 100  # more unreadable items in a row stop the job (status 1)
    config.data.demo = ml_collections.ConfigDict(dict(n_photos=256, n_anime=256, size=64))  # demo data set

    # ---- schedule -----------------------------------------------------------------------------
    config.global_batch = 16  # official batch 16 per GPU (GPU count UNKNOWN); must divide by the devices
    config.num_steps = 1000  # shinkai-221000.pt is most probably lhq-220000.pt + ~1,000 iterations

    # ---- model and losses (docs/reference.md §4.3-4.6) -----------------------------------------------------
    config.model = ml_collections.ConfigDict()
    config.model.faithful_to = "official_code"  # "official_code" | "paper": S1 content input, S2 patch groups, S3
    config.model.init_from = "g"  # G_t starts from the source "g" (official) or "g_ema"; G_s, G_ema from g_ema
    config.model.freeze_g = 3  # last resolution blocks of G_t that train (3: 64-256 px); -1 trains all
    config.model.lambda_content = 0.01  # VGG19 conv4_4 MSE between G_t(z) and G_s(z)
    config.model.lambda_clip = 1.0  # 1 - cos(CLIP(G_s(z)), CLIP(G_t(z)))
    config.model.lambda_patch = 0.05  # patch-wise CLIP contrastive loss
    config.model.n_crops = 16  # random crops per image pair (positions shared by the batch)
    config.model.crop_size = 32  # crop side in pixels (each crop resized to CLIP's 224)
    config.model.patch_tau = 1.0  # temperature of the patch loss (script default; CUT uses 0.07)
    config.model.mixing = 0.9  # style-mixing probability
    config.model.r1_gamma = 10.0  # R1 weight
    config.model.d_reg_every = 16  # lazy R1 interval (also scales D's lr/betas)
    config.model.g_reg_every = 4  # scales G's lr/betas (path-length reg itself is off with FreezeG)
    config.model.lr = 0.002  # base lr: G 0.0016, betas (0, 0.99**0.8); D 0.002*16/17, (0, 0.99**(16/17))
    config.model.ema_decay = 0.5 ** (32 / 10000)  # G_ema decay per step
    config.model.start_iter = -1  # source iteration (R1 phase); -1: parse from the file name (220000)
    config.model.resume_optimizers = True  # continue the source's Adam states (g_optim/d_optim) when it has them
    config.conv_impl = "batched"  # modulated conv implementation: "batched" (fast on CPU), "grouped", "vmap"

    # ---- the demo source generator (used only without source_checkpoint, on the demo data) -----
    config.demo_source = ml_collections.ConfigDict()
    config.demo_source.size = 64  # resolution (= data.image_size)
    config.demo_source.style_dim = 64  # latent width
    config.demo_source.n_mlp = 4  # mapping layers
    config.demo_source.channel_multiplier = 2  # unused when channels is set
    config.demo_source.channels = {"4": 64, "8": 64, "16": 64, "32": 32, "64": 16}  # per resolution
    config.demo_source.pretrain_steps = 300  # plain StyleGAN2 steps on the demo photos (0: random source)

    # ---- watching, checkpoints, export --------------------------------------------------------
    config.log_every = 50  # steps between loss/throughput reports
    config.images_every = 250  # steps between image grids (fixed latents: G_s | G_t | G_ema)
    config.grid_images = 8  # latents in the grid
    config.grid_seed = 0  # their numpy seed
    config.checkpoint_every = 250  # steps between checkpoints (official: every 1,000)
    config.keep_checkpoints = 3  # most recent checkpoints kept
    config.async_checkpoints = True  # write checkpoints in the background
    config.tensorboard = True  # event files in <workdir>/tensorboard
    config.compilation_cache = True  # keep compiled XLA programs (fast restarts)
    config.compilation_cache_dir = ""  # "" = <workdir>/xla_cache
    config.allow_config_change = False  # True: resume a checkpoint trained with other settings (listed as a warning)

    if variant in ("demo", "tiny"):
        # Demo: pretrain a 64 px StyleGAN2 on the demo photos (300 steps), then fine-tune it on the
        # demo anime renderings with random VGG19 and a small random CLIP (3 min 52 s on 2 CPU cores).
        config.workdir = "runs/stylegan_finetune_demo"
        config.allow_random_feature_nets = True
        config.data.image_size = 64
        config.data.num_workers = 1
        config.global_batch = 4
        config.num_steps = 200
        config.model.crop_size = 16  # 64 px images: 16 px crops
        config.model.start_iter = 0
        config.log_every = 25
        config.images_every = 100
        config.checkpoint_every = 100
        if variant == "tiny":  # the test size: 16 px, seconds per step, random source
            config.workdir = "runs/stylegan_finetune_tiny"
            config.data.image_size = 16
            config.data.num_workers = 0
            config.data.demo = ml_collections.ConfigDict(dict(n_photos=8, n_anime=8, size=16))
            config.demo_source.size = 16
            config.demo_source.style_dim = 16
            config.demo_source.n_mlp = 2
            config.demo_source.channels = {"4": 16, "8": 16, "16": 8}
            config.demo_source.pretrain_steps = 0
            config.random_clip = ml_collections.ConfigDict(dict(
                image_size=16, patch_size=8, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                projection_dim=8))
            config.model.freeze_g = 1
            config.model.crop_size = 8
            config.model.n_crops = 4
            config.model.d_reg_every = 2
            config.num_steps = 4
            config.log_every = 2
            config.images_every = 2
            config.checkpoint_every = 2
            config.grid_images = 2
            config.async_checkpoints = False
            config.tensorboard = False
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/stylegan_finetune.py (known: demo, tiny)")
    return config
