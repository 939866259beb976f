"""The StyleGAN2 fine-tuning job: `python -m scenimefy_jax.main --config=configs/stylegan_finetune.py`.

Wires a config to the source checkpoint, the frozen VGG19 / CLIP feature networks, the anime folder
(`data/single_domain.py`), the step (`training/stylegan_step.py`) and the generic loop
(`training/loop.py`: mesh, jit with donation, checkpoints + resume + SIGTERM, metrics, TensorBoard):

* source: a rosinality `.pt` (converted on the fly) or a converted / exported `stylegan2` model
  directory, holding `g_ema`, `d` and (official `init_from="g"`) `g`;
* image grids: fixed latents (stored noise, no mixing) through G_s | G_t | G_ema;
* export: `<workdir>/generator`, a `stylegan2` model directory with `g_ema`, `g` (= G_t) and `d`, which
  `configs/sample.py` loads (`--config.checkpoint=<source> --config.checkpoint2=<workdir>/generator`).

Without a source checkpoint (the `demo` variant) the job first trains a small StyleGAN2 from scratch
on the procedural demo photos (`<workdir>/source_pretrain`, same loop, FreezeG off, no VGG/CLIP
terms) and exports it as `<workdir>/source`; without VGG19 / CLIP weights it uses randomly
initialised networks (logged as a warning: the content/CLIP terms are then only exercised, not
meaningful).
"""
from __future__ import annotations

import dataclasses
import functools
import logging as py_logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scenimefy_jax import model_io
from scenimefy_jax.convert import stylegan2 as convert_sg
from scenimefy_jax.data import demo, images, pipeline, single_domain
from scenimefy_jax.models import stylegan2 as sg
from scenimefy_jax.models.clip import CLIPVisionModel
from scenimefy_jax.models.vgg import CONV4_4, VGG19Features, trim_params
from scenimefy_jax.parallel import distributed
from scenimefy_jax.training import fingerprint, loop, metrics
from scenimefy_jax.training import stylegan_step as st

_log = py_logging.getLogger(__name__)


def hparams_from_config(model_config, **overrides) -> st.FinetuneHParams:
    fields = {f.name for f in dataclasses.fields(st.FinetuneHParams)}
    values = {k: v for k, v in model_config.items() if k in fields}
    unknown = sorted(set(model_config.keys()) - fields - {"init_from", "resume_optimizers"})
    if unknown:
        raise ValueError(f"config.model has keys the step does not know: {', '.join(unknown)}")
    values.update(overrides)
    return st.FinetuneHParams(**values)


# ----------------------------------------------------------------------------- weights


def load_source(path: str) -> tuple[dict, dict]:
    """(`{"g_ema", "g", "d"}` variable trees, architecture) from a `.pt` or a model directory."""
    if os.path.isdir(path):
        saved = model_io.load_model(path, expected_kind=convert_sg.KIND)
        return dict(saved.params), dict(saved.metadata["architecture"])
    if not os.path.isfile(path):
        raise ValueError(f"source_checkpoint={path!r}: no such file or directory")
    from scenimefy_jax.convert import convert_file

    converted = convert_file(path, kind=convert_sg.KIND)
    return dict(converted.params), dict(converted.architecture)


def load_vgg(path: str) -> Any:
    """conv1_1..conv4_4 of a torchvision `vgg19-*.pth` or a converted `vgg19` model directory."""
    if os.path.isdir(path):
        params = model_io.load_model(path, expected_kind="vgg19").params
    else:
        from scenimefy_jax.convert import convert_file

        params = convert_file(path, kind="vgg19").params
    return trim_params(params, CONV4_4)


def load_clip(folder: str) -> tuple[CLIPVisionModel, Any]:
    from scenimefy_jax.convert.clip import load_hf_clip

    return load_hf_clip(folder)


def random_clip(config, key) -> tuple[CLIPVisionModel, Any]:
    c = config.random_clip
    model = CLIPVisionModel(image_size=c.image_size, patch_size=c.patch_size, hidden_size=c.hidden_size,
                            intermediate_size=c.intermediate_size, num_layers=c.num_layers,
                            num_heads=c.num_heads, projection_dim=c.projection_dim)
    x = jnp.zeros((1, c.image_size, c.image_size, 3))
    return model, jax.device_get(model.init(key, x)["params"])


def random_vgg(key) -> Any:
    """conv1_1..conv4_4 with He-scaled random kernels (the CUT init of `layers.Conv`, gain 0.02, would
    make the features, and so the content loss, vanish)."""
    params = VGG19Features(last_layer=CONV4_4).init(key, jnp.zeros((1, 32, 32, 3)))["params"]
    out = {}
    for i, (name, p) in enumerate(sorted(params.items())):
        k = p["kernel"]
        scale = np.sqrt(2.0 / (k.shape[0] * k.shape[1] * k.shape[2]))
        out[name] = {"kernel": scale * jax.random.normal(jax.random.fold_in(key, i), k.shape), "bias": p["bias"]}
    return jax.device_get(out)


def architecture_from_config(a) -> dict:
    channels = {str(k): int(v) for k, v in a.channels.items()} if a.channels else None
    return {"model": "StyleGAN2", "size": a.size, "style_dim": a.style_dim, "n_mlp": a.n_mlp,
            "lr_mlp": 0.01, "channel_multiplier": a.channel_multiplier, "channels": channels}


def random_source(arch: dict, key) -> dict:
    """A freshly initialised `{"g_ema", "g", "d"}` (rosinality: g_ema starts as a copy of g)."""
    G = convert_sg.generator_from_architecture(arch)
    D = convert_sg.discriminator_from_architecture(arch)
    kg, kd = jax.random.split(key)
    g = jax.device_get(sg.init_generator(G, kg))
    d = jax.device_get(D.init(kd, jnp.zeros((1, G.size, G.size, 3))))
    return {"g_ema": g, "g": jax.tree_util.tree_map(np.copy, g), "d": {"params": d["params"]}}


# ----------------------------------------------------------------------------- the task


@dataclasses.dataclass(frozen=True, eq=False)
class FinetuneTask:
    """Builds the `loop.TrainTask` of the fine-tuning job."""

    hparams: st.FinetuneHParams
    nets: st.Networks
    initial_state: st.FinetuneState  # host arrays
    grid_z: np.ndarray  # fixed latents of the image grids [N, style_dim]

    # The frozen networks (G_s, VGG19, CLIP; ~0.5 GB at the official size) are not part of the loop's
    # state: the loop replicates them once and passes them to every step as an argument (`frozen`),
    # and they are not checkpointed (the job loads them again on restart).

    @functools.cached_property
    def frozen(self):
        return self.initial_state.frozen

    @functools.cached_property
    def _trained_state(self) -> st.FinetuneState:
        return self.initial_state.replace(frozen={})

    def init_state(self, rng):
        # The initial state is data (converted weights), not a function of `rng`. Fetched through a
        # host callback so that the loop's jitted init does not inline them as constants.
        del rng
        state = self._trained_state
        shapes = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), state)
        return jax.pure_callback(lambda: state, shapes)

    def train_step(self, state, batch, rng, inputs, frozen):
        del inputs  # nothing is scheduled on the host; the R1 phase is derived from state.step
        state, metrics_ = st.train_step(state.replace(frozen=frozen), batch, rng, hparams=self.hparams, nets=self.nets)
        return state.replace(frozen={}), metrics_

    def step_inputs(self, step: int) -> dict[str, float]:
        return {}

    @functools.cached_property
    def _render(self):
        G = self.nets.G
        return jax.jit(lambda s, g_s, z: jnp.concatenate([
            st.render_fixed(G, g_s, s.noises["g_s"], z),
            st.render_fixed(G, s.g, s.noises["g"], z),
            st.render_fixed(G, s.g_ema, s.noises["g_ema"], z)]))

    def make_images(self, state, batch) -> dict[str, np.ndarray]:
        n = len(self.grid_z)
        out = np.asarray(self._render(state, self.frozen["g_s"], jnp.asarray(self.grid_z)))
        return {"grid/Gs_Gt_Gema": metrics.image_grid([out[:n], out[n : 2 * n], out[2 * n :]], max_images=n)}

    def param_trees(self, state) -> dict[str, Any]:
        return {"G_t": state.g, "D": state.d}

    def as_loop_task(self, export) -> loop.TrainTask:
        return loop.TrainTask(
            init_state=self.init_state, train_step=self.train_step, step_inputs=self.step_inputs,
            batch_keys=single_domain.BATCH_KEYS, make_images=self.make_images, export=export,
            param_trees=self.param_trees, frozen=self.frozen,
        )


def export_generator(state: st.FinetuneState, directory: str, *, architecture: dict, source: dict) -> str:
    """Writes `{"g_ema", "g", "d"}` as a `stylegan2` model directory (what `configs/sample.py` loads)."""
    state = jax.device_get(state)
    tree = {
        "g_ema": {"params": state.g_ema, "noises": state.noises["g_ema"]},
        "g": {"params": state.g, "noises": state.noises["g"]},
        "d": {"params": state.d},
    }
    arch = {k: v for k, v in architecture.items() if k not in ("networks", "optimizers")}
    return model_io.save_model(directory, kind=convert_sg.KIND, params=tree,
                               architecture={**arch, "networks": sorted(tree)}, source=source, overwrite=True)


def _loop_config(config, workdir: str, total_steps: int) -> loop.LoopConfig:
    return loop.LoopConfig(
        workdir=workdir, total_steps=total_steps, global_batch=config.global_batch, seed=config.seed,
        log_every=config.log_every, images_every=config.images_every, checkpoint_every=config.checkpoint_every,
        keep_checkpoints=config.keep_checkpoints, async_checkpoints=config.async_checkpoints,
        tensorboard=config.tensorboard, hparams=config.to_dict(),
        fingerprint=fingerprint.config_fingerprint(config, ignore=_NOT_COMPUTATION),
        allow_config_change=config.allow_config_change,
    )


# Besides fingerprint.IGNORED (cadences, paths of outputs, workers, hosts), keys that never change the steps:
_NOT_COMPUTATION = (
    "grid_seed",  # the latents of the image grids: read-only views of the state
    "compilation_cache_dir",  # where compiled programs are kept
    "conv_impl",  # three implementations of the same modulated convolution (docs/stylegan2.md), a speed choice
)


def _dataset(config, folder: str, seed: int):
    return single_domain.make_dataset(
        single_domain.folder_source(folder), image_size=config.data.image_size, global_batch=config.global_batch,
        seed=seed, flip=config.data.flip, num_workers=config.data.num_workers,
        max_unreadable_in_a_row=config.data.max_unreadable_in_a_row)


def _demo_folders(config) -> dict[str, str]:
    d = config.data.demo
    root = os.path.join(config.workdir, "demo_data")
    _log.info("writing the procedural demo data set to %s", root)
    return demo.write_demo_dataset(root, n_photos=d.n_photos, n_anime=d.n_anime, n_pairs=0, size=d.size,
                                   seed=config.seed)


def pretrain_demo_source(config, arch: dict, photos: str) -> str:
    """Trains the demo source StyleGAN2 on the demo photos; returns its model directory."""
    out = os.path.join(config.workdir, "source")
    done = model_io.is_saved_model(out)
    # Several hosts: every host looks before any host writes (so all take the same branch below), and
    # process 0 alone writes the directory, which the others read only after the closing barrier.
    distributed.barrier("stylegan_finetune/demo_source_checked")
    if done:
        return out
    steps = int(config.demo_source.pretrain_steps)
    tree = random_source(arch, jax.random.key(config.seed + 1))
    if steps > 0:
        hp = hparams_from_config(config.model, freeze_g=-1, lambda_content=0.0, lambda_clip=0.0,
                                 lambda_patch=0.0, start_iter=0)
        G = convert_sg.generator_from_architecture(arch, conv_impl=config.conv_impl)
        nets = st.Networks(G, convert_sg.discriminator_from_architecture(arch))
        task = FinetuneTask(hp, nets, st.create_finetune_state(tree, hp, nets), _grid_z(config, G.style_dim))
        workdir = os.path.join(config.workdir, "source_pretrain")
        _log.info("demo: pretraining a %dpx source StyleGAN2 from scratch on %s for %d steps in %s",
                  G.size, photos, steps, workdir)
        dataset, _ = _dataset(config, photos, config.seed + 1)
        result = loop.train(task.as_loop_task(None), dataset, _loop_config(config, workdir, steps))
        if result.diverged_at is not None:
            raise SystemExit(1)
        if not result.finished:
            raise SystemExit(0)  # stopped by SIGTERM: the same command resumes the pretraining
        s = jax.device_get(result.state)
        tree = {"g_ema": {"params": s.g_ema, "noises": s.noises["g_ema"]},
                "g": {"params": s.g, "noises": s.noises["g"]}, "d": {"params": s.d}}
    else:
        _log.warning("demo: the source generator is randomly initialised (demo_source.pretrain_steps = 0)")
    if distributed.is_writer():
        model_io.save_model(out, kind=convert_sg.KIND, params=tree, architecture={**arch, "networks": sorted(tree)},
                            source={"job": "stylegan_finetune demo source", "pretrain_steps": steps}, overwrite=True)
    distributed.barrier("stylegan_finetune/demo_source_written")
    return out


def _adam_count(opt_state) -> int:
    counts = [int(x.count) for x in jax.tree_util.tree_leaves(
        opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState)) if isinstance(x, optax.ScaleByAdamState)]
    return max(counts, default=0)


def _check_optimizer_hparams(saved: dict, hp: st.FinetuneHParams) -> None:
    """PyTorch's `optimizer.load_state_dict` also restores the saved lr/betas (docs/reference.md §4.4): say so when
    the source's differ from the configured ones, which are the ones used here."""
    for name, (lr, betas) in (("g_optim", hp.g_adam()), ("d_optim", hp.d_adam())):
        if name not in saved:
            continue
        got_lr, got_betas = saved[name].get("lr"), tuple(saved[name].get("betas", ()))
        if not (np.isclose(got_lr, lr, rtol=1e-6) and np.allclose(got_betas, betas, rtol=1e-6)):
            _log.warning("%s of the source has lr %s betas %s; this run uses the configured lr %s betas %s "
                         "(the official script would continue with the saved ones: set model.lr/d_reg_every/"
                         "g_reg_every to match)", name, got_lr, got_betas, lr, betas)


def _grid_z(config, style_dim: int) -> np.ndarray:
    return np.random.default_rng(config.grid_seed).standard_normal((config.grid_images, style_dim)).astype(np.float32)


def run(config) -> int:
    cache = (config.compilation_cache_dir or os.path.join(config.workdir, "xla_cache")) if config.compilation_cache else None
    with loop.compilation_cache(cache):
        try:
            return _run(config)
        except pipeline.UnreadableDataError as e:  # from either loop (demo pretraining, fine-tuning)
            _log.error("%s", e)  # one line, no traceback; the last checkpoint stays the latest
            return 1


def _run(config) -> int:
    demo_folders = None
    if not config.data.folder:
        demo_folders = _demo_folders(config)
    source_path = config.source_checkpoint
    if not source_path:
        if demo_folders is None:
            raise ValueError("source_checkpoint is required (a rosinality .pt such as lhq-220000.pt, or a "
                             "converted stylegan2 directory) unless training on the demo data")
        source_path = pretrain_demo_source(config, architecture_from_config(config.demo_source), demo_folders["photos"])
    tree, arch = load_source(source_path)
    start_iter = config.model.start_iter
    if start_iter < 0:  # official: parsed from the checkpoint's file name ("220000.pt")
        from scenimefy_jax.data.image_files import ConfigError

        name = os.path.basename(os.path.normpath(source_path))
        stem = os.path.splitext(name)[0].split("-")[-1]
        if not stem.isdigit():  # guessing 0 would silently shift the lazy-R1 phase
            raise ConfigError(
                f"--config.model.start_iter=-1 reads the source iteration from the file name, but {name!r} ends in "
                "no number; set --config.model.start_iter (220000 for lhq-220000.pt; 0 if unknown)")
        start_iter = int(stem)
    hp = hparams_from_config(config.model, start_iter=start_iter)
    G = convert_sg.generator_from_architecture(arch, conv_impl=config.conv_impl)
    D = convert_sg.discriminator_from_architecture(arch)
    if G.size != config.data.image_size:
        raise ValueError(f"data.image_size={config.data.image_size} but the source generator renders {G.size}px")
    key = jax.random.key(config.seed + 2)
    vgg_params = clip_model = clip_params = None
    if hp.uses_vgg:
        if config.vgg_checkpoint:
            vgg_params = load_vgg(config.vgg_checkpoint)
        elif config.allow_random_feature_nets:
            _log.warning("NO VGG19 WEIGHTS: the content loss uses a randomly initialised VGG19 "
                         "(set vgg_checkpoint=vgg19-dcbb9e9d.pth for the real loss)")
            vgg_params = random_vgg(jax.random.fold_in(key, 0))
        else:
            raise ValueError("model.lambda_content > 0 needs vgg_checkpoint (torchvision vgg19-dcbb9e9d.pth)")
    if hp.uses_clip:
        if config.clip_model:
            clip_model, clip_params = load_clip(config.clip_model)
        elif config.allow_random_feature_nets:
            _log.warning("NO CLIP WEIGHTS: the CLIP losses use a small randomly initialised ViT (%s) "
                         "(set clip_model=<Hugging Face openai/clip-vit-base-patch32 folder> for the real losses)",
                         dict(config.random_clip))
            clip_model, clip_params = random_clip(config, jax.random.fold_in(key, 1))
        else:
            raise ValueError("model.lambda_clip / lambda_patch > 0 need clip_model (a Hugging Face CLIP folder)")
    nets = st.Networks(G, D, VGG19Features(last_layer=CONV4_4) if hp.uses_vgg else None, clip_model)
    init_from = config.model.init_from
    resume = bool(config.model.resume_optimizers) and "g_optim" in tree and "d_optim" in tree
    if resume:
        _check_optimizer_hparams(arch.get("optimizers", {}), hp)
    else:
        _log.info("Adam starts fresh (%s)", "model.resume_optimizers=False" if not config.model.resume_optimizers
                  else f"{source_path} holds no g_optim/d_optim states")
    state = st.create_finetune_state(tree, hp, nets, vgg_params=vgg_params, clip_params=clip_params,
                                     init_from=init_from, resume_optimizers=resume)
    if resume:
        _log.info("resumed the source's Adam states (G count %d, D count %d), as the official script does",
                  _adam_count(state.g_opt), _adam_count(state.d_opt))
    del tree
    folder = config.data.folder or demo_folders["anime"]
    dataset, plan = _dataset(config, folder, config.seed)
    names = st.trainable_modules(G, hp.freeze_g)
    _log.info(
        "fine-tuning %s (%dpx, G_t from %r, iteration %d) on %s: %d images, %d steps per epoch at global batch "
        "%d; %d steps on %d device(s); faithful_to=%s; trainable G modules: %s",
        source_path, G.size, init_from, start_iter, folder, plan.n_images, plan.steps_per_epoch,
        config.global_batch, config.num_steps, jax.device_count(), hp.faithful_to,
        "all" if names is None else ", ".join(names))
    task = FinetuneTask(hp, nets, state, _grid_z(config, G.style_dim))
    source_info = {"job": "stylegan_finetune", "source": os.path.abspath(source_path), "data": folder,
                   "faithful_to": hp.faithful_to, "init_from": init_from}

    def export(state, workdir):
        if jax.process_index() != 0:
            return
        path = export_generator(state, os.path.join(workdir, "generator"), architecture=arch, source=source_info)
        _log.info("fine-tuned generator exported to %s; render pairs with: python -m scenimefy_jax.main "
                  "--config=configs/sample.py --config.checkpoint=%s --config.checkpoint2=%s --config.output=...",
                  path, source_path, path)
        grid = task.make_images(state, None)["grid/Gs_Gt_Gema"]
        images.save_png(grid, os.path.join(workdir, "samples.png"))

    result = loop.train(task.as_loop_task(export), dataset, _loop_config(config, config.workdir, config.num_steps))
    # 0 also after a SIGTERM (the checkpoint is saved and the same command resumes); 1 when it diverged.
    return 1 if result.diverged_at is not None else 0
