"""Semi-supervised photo -> anime translation training (Scenimefy `semi_cut`, docs/reference.md §2).

    python -m scenimefy_jax.main --config=configs/i2i.py                 # the official recipe
    python -m scenimefy_jax.main --config=configs/i2i.py:demo            # small, minutes on a laptop CPU
    python -m scenimefy_jax.main --config=configs/i2i.py \
        --config.data.unpaired=datasets/unpaired_s2a --config.data.paired=datasets/pair_s2a \
        --config.workdir=runs/shinkai

With no data set configured (`data.unpaired`, `data.paired` and `data.packed` all empty) the job
writes the procedural demo data set into `<workdir>/demo_data` and trains on it. Running the same
command again resumes from the latest checkpoint in `workdir`.

Defaults follow the official `train.sh` (docs/reference.md §2.1): batch 1, 256x256, 10 + 10 epochs over the
unpaired photos, Adam 2e-4 (0.5, 0.999) with linear decay, hDCE curriculum 50 -> 10.
"""
import ml_collections

from scenimefy_jax.parallel import distributed


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "i2i"
    # Several hosts (TPU pod slice, SLURM, ...): docs/multihost.md. Default: join a detected cluster, else one host.
    config.distributed = distributed.config_defaults()
    config.workdir = "runs/i2i"  # checkpoints/, metrics.jsonl, images/, tensorboard/, translator/, sample.png
    config.seed = 0  # parameters, data order, patch positions: everything derives from it

    # ---- data (docs/reference.md §2.2) -------------------------------------------------------------------
    config.data = ml_collections.ConfigDict()
    config.data.unpaired = ""  # folder with trainA/ (photos) and trainB/ (anime), e.g. datasets/unpaired_s2a
    config.data.paired = ""  # folder with trainA/ and trainB/ with identical file names, e.g. datasets/pair_s2a
    config.data.packed = ""  # or: a data set packed by tools/build_dataset.py (replaces both folders)
    config.data.image_size = 256  # official load_size = crop_size = 256 (bicubic resize of both sides)
    config.data.flip = True  # official: random horizontal flip of unpaired images (pairs never flip)
    config.data.num_workers = 2  # decoding processes (0: decode in the training process)
    config.data.max_unreadable_in_a_row = 100  # more unreadable items in a row stop the job (status 1)
    # The procedural demo data set used when no data set is configured.
    config.data.demo = ml_collections.ConfigDict()
    config.data.demo.n_photos = 400  # unpaired photo-like scenes (one epoch = this many items)
    config.data.demo.n_anime = 300  # unpaired anime-like renderings of other scenes
    config.data.demo.n_pairs = 300  # (photo, anime rendering) pairs of the same scene
    config.data.demo.size = 128  # side of the generated images (resized to data.image_size)

    # ---- schedule (docs/reference.md §2.8-2.9) -----------------------------------------------------------
    config.global_batch = 1  # official batch 1; larger batches must divide by the device count
    config.n_epochs = 10  # epochs at the full learning rate
    config.n_epochs_decay = 10  # epochs of linear decay (lr x 10/11 ... 1/11), and the schedules' N
    config.num_steps = 0  # >0: stop after this many steps instead of (n_epochs + n_epochs_decay) epochs

    # ---- model and losses (docs/reference.md §2.1, §2.6, §2.10) ------------------------------------------
    config.model = ml_collections.ConfigDict()
    config.model.faithful_to = "official_code"  # "official_code" or "paper" (lambda_pair decay, NCE_s weight, VGG input)
    config.model.lambda_GAN = 1.0  # unpaired LSGAN
    config.model.lambda_GAN_p = 1.0  # paired (conditional) LSGAN
    config.model.lambda_HDCE = 0.1  # hard-negative decoupled contrastive loss
    config.model.lambda_SRC = 0.05  # semantic relation consistency
    config.model.lambda_NCE_s = 0.05  # StylePatchNCE of the supervised branch (train.sh flag)
    config.model.lambda_VGG = -1.0  # <= 0 disables the VGG content loss (train.sh); needs vgg_checkpoint
    config.model.dce_idt = True  # identity branch G(y) for HDCE_Y
    config.model.decay_supervised = True  # official isDecay: lambda_pair schedule on
    config.model.use_curriculum = True  # hDCE temperature 50 -> 10 over the epochs
    config.model.hdce_gamma = 50.0  # curriculum start
    config.model.hdce_gamma_min = 10.0  # curriculum end
    config.model.nce_T = 0.07  # contrastive temperature
    config.model.num_patches = 256  # sampled positions per encoder tap
    config.model.netF_nc = 256  # projection head width (F and F_s)
    config.model.share_patch_ids = True  # official: one set of positions for the whole batch
    config.model.ngf = 64  # generator width (the released translator: 64)
    config.model.n_blocks = 9  # generator residual blocks (the released translator: 9)
    config.model.ndf = 64  # discriminator width (D and D_p)
    config.model.n_layers_D = 3  # PatchGAN depth
    config.model.compute_dtype = "float32"  # "bfloat16": convolutions in bf16, parameters and losses in float32
    config.model.lr = 2e-4  # Adam learning rate (all five networks)
    config.model.beta1 = 0.5  # Adam beta1
    config.model.beta2 = 0.999  # Adam beta2
    config.vgg_checkpoint = ""  # converted VGG19 (model_io directory), only for lambda_VGG > 0

    # ---- watching, checkpoints, export --------------------------------------------------------
    config.log_every = 100  # steps between loss/throughput reports (console, metrics.jsonl, TensorBoard)
    config.images_every = 5000  # steps between image grids x | G(x) | y | x_p | G(x_p) | y_p
    config.grid_images = 4  # rows of the image grid
    config.checkpoint_every = 5000  # steps between checkpoints (the official "latest" every 5000 images)
    config.keep_checkpoints = 3  # most recent checkpoints kept
    config.async_checkpoints = True  # write checkpoints in the background while training continues
    config.tensorboard = True  # event files in <workdir>/tensorboard (tensorboardX, no TensorFlow)
    config.compilation_cache = "auto"  # compiled XLA programs kept for fast restarts: "auto" = <workdir>/xla_cache, "" = off, or a folder
    config.sample_image = ""  # photo translated by the final model into <workdir>/sample.png ("" = first photo)
    config.allow_config_change = False  # True: resume a checkpoint trained with other settings (listed as a warning)

    # ---- FID / KID while training (docs/evaluation.md), off by default -------------------------------
    config.eval = ml_collections.ConfigDict()
    config.eval.every = 0  # steps between evaluations (0: off); also at the last step
    config.eval.inception = ""  # pt_inception-2015-12-05-6726825d.pth or its converted directory ("random": demo only)
    config.eval.photos = ""  # held-out photos ("" with the demo data: a held-out demo set), resized to data.image_size
    config.eval.num_photos = 500  # at most this many held-out photos (first in name order)
    config.eval.real = ""  # anime reference: folder or statistics .npz ("" = the training anime images)
    config.eval.num_real = 0  # with real = "": at most this many training anime images (0: all)
    config.eval.protocol = "pytorch_fid"  # "pytorch_fid" or "clean" (docs/reference.md §6.1)
    config.eval.batch_size = 50  # Inception and translation batch
    config.eval.kid_subsets = 100  # KID subsets (torch-fidelity default)
    config.eval.kid_subset_size = 1000  # KID subset size (shrunk to the smaller set when needed)
    config.eval.cache = "auto"  # reference features cache for eval.real folders ("auto": <workdir>/fid_cache)

    if variant == "demo":
        # 300 steps at 64x64 with a slimmer network: ~5 minutes on a 2-core CPU, and it
        # leaves a checkpoint, image grids, metrics and a translated sample behind.
        config.workdir = "runs/i2i_demo"
        config.data.image_size = 64
        config.data.num_workers = 1
        config.data.demo.size = 64
        config.data.demo.n_photos = 75  # one epoch = 75 steps at batch 1
        config.data.demo.n_anime = 50
        config.data.demo.n_pairs = 50
        # 2 + 2 epochs = 300 steps, with the lr decay and the hDCE curriculum. N = 4 keeps the official
        # lambda_pair = cos(pi/2 * N * (e - 1)) at 1.0 as with the official N = 20 (any other N not a
        # multiple of 4 makes that formula swing between 1, 0 and -1; see docs/reference.md §2.7).
        config.n_epochs = 2
        config.n_epochs_decay = 2
        config.model.ngf = 16
        config.model.n_blocks = 6
        config.model.ndf = 32
        config.model.num_patches = 64
        config.model.netF_nc = 64
        config.log_every = 25
        config.images_every = 100
        config.checkpoint_every = 100
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/i2i.py (known: demo)")
    return config
