"""The translation training job: `python -m scenimefy_jax.main --config=configs/i2i.py`.

Wires a config to the data pipeline (`data/pipeline.py`), the semi-supervised step
(`training/i2i_step.py`) and the generic loop (`training/loop.py`):

* epoch = one pass over the unpaired photos at the global batch (`max(|A|, |B|) // B` steps, the
  official `drop_last`); the epoch's lr multiplier, hDCE temperature and supervised weight
  (docs/reference.md §2.8, Appendix A) are computed on the host for the step about to run and enter the jitted
  step as traced scalars;
* image grids `x | G(x) | y | x_p | G(x_p) | y_p`;
* optionally (`eval.every > 0`) FID and KID of G on a fixed held-out photo set against the anime set,
  logged as `eval/fid`, `eval/kid_mean`, `eval/kid_std` (`evaluation/during_training.py`);
* at the end the translator is exported where `Translator.from_checkpoint(<workdir>/translator)`
  loads it, and a sample photo is translated into `<workdir>/sample.png`.
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

from scenimefy_jax import model_io
from scenimefy_jax.data import demo, images, pipeline
from scenimefy_jax.data.image_files import ConfigError
from scenimefy_jax.parallel import mesh as mesh_lib
from scenimefy_jax.training import fingerprint, i2i_step, loop, metrics

_log = py_logging.getLogger(__name__)


def hparams_from_config(config) -> i2i_step.I2IHParams:
    fields = {f.name for f in dataclasses.fields(i2i_step.I2IHParams)}
    values = {k: v for k, v in config.model.items() if k in fields}
    unknown = sorted(set(config.model.keys()) - fields)
    if unknown:
        raise ValueError(f"config.model has keys the step does not know: {', '.join(unknown)}")
    return i2i_step.I2IHParams(**values, n_epochs=config.n_epochs, n_epochs_decay=config.n_epochs_decay)


def resolve_sources(config) -> tuple[pipeline.TrainSources, str]:
    """The configured data set, or the demo data set written into `<workdir>/demo_data`."""
    data = config.data
    if data.packed:
        if data.unpaired or data.paired:
            raise ConfigError("set either --config.data.packed or --config.data.unpaired + --config.data.paired, not both")
        return pipeline.record_sources(data.packed), f"packed data set {data.packed}"
    if data.unpaired or data.paired:
        if not (data.unpaired and data.paired):
            raise ConfigError("--config.data.unpaired and --config.data.paired must be set together "
                              "(docs/reference.md §2.2 layouts)")
        return pipeline.folder_sources(data.unpaired, data.paired), f"folders {data.unpaired} + {data.paired}"
    root = os.path.join(config.workdir, "demo_data")
    d = data.demo
    _log.info("no data set configured: writing the procedural demo data set to %s", root)
    if config.data.image_size >= 256 and not config.num_steps:
        _log.warning(
            "training the full official recipe (%d px) on the demo data: that takes days on a CPU. For the "
            "few-minute demo use --config=configs/i2i.py:demo; for real training set data.unpaired and "
            "data.paired (or data.packed)", config.data.image_size)
    folders = demo.write_demo_dataset(
        root, n_photos=d.n_photos, n_anime=d.n_anime, n_pairs=d.n_pairs, size=d.size, seed=config.seed
    )
    return (
        pipeline.folder_sources(os.path.dirname(folders["photos"]), os.path.dirname(folders["pair_photos"])),
        f"demo data set {root}",
    )


def _epoch_of(step: int, steps_per_epoch: int) -> int:
    """1-based epoch of the 0-based `step`."""
    return step // steps_per_epoch + 1


@dataclasses.dataclass(frozen=True)
class I2ITask:
    """Builds the `loop.TrainTask` of the translation job."""

    hparams: i2i_step.I2IHParams
    image_size: int
    steps_per_epoch: int
    grid_images: int = 4
    vgg_params: Any = None  # frozen VGG19 weights (lambda_VGG > 0), passed to the step by the loop
    evaluator: Any = None  # evaluation.during_training.GeneratorEvaluator (eval.every > 0)

    def init_state(self, rng):
        return i2i_step.create_train_state(rng, self.hparams, self.image_size)

    def train_step(self, state, batch, rng, inputs, vgg_params=None):
        schedule = i2i_step.EpochSchedule(
            lr_scale=inputs["lr_scale"], hdce_gamma=inputs["hdce_gamma"], lambda_pair=inputs["lambda_pair"]
        )
        state, step_metrics = i2i_step.train_step(state, batch, rng, schedule, vgg_params, hparams=self.hparams)
        # The schedule values are logged by the loop from the host; drop the echoed copies.
        return state, {k: v for k, v in step_metrics.items() if k not in ("lr_scale", "hdce_gamma", "lambda_pair")}

    def step_inputs(self, step: int) -> dict[str, float]:
        epoch = min(_epoch_of(step, self.steps_per_epoch), self.hparams.total_epochs)
        s = i2i_step.EpochSchedule.for_epoch(self.hparams, epoch)
        return {"epoch": float(epoch), "lr_scale": float(s.lr_scale), "hdce_gamma": float(s.hdce_gamma),
                "lambda_pair": float(s.lambda_pair)}

    @functools.cached_property
    def _translate(self):
        generator = i2i_step.build_networks(self.hparams).G
        return jax.jit(lambda p, x: generator.apply({"params": p}, x))

    def make_images(self, state, batch) -> dict[str, np.ndarray]:
        """The grid of this host's first rows (on several hosts: process 0's, which it writes)."""
        n = self.grid_images
        x, y, xp, yp = (np.asarray(batch[k])[:n] for k in ("x", "y", "x_p", "y_p"))
        G = mesh_lib.host_local(state.params["G"])  # this host's rows, this host's devices
        fakes = np.asarray(self._translate(G, jnp.concatenate([x, xp])))
        return {"grid/x_Gx_y_xp_Gxp_yp": metrics.image_grid([x, fakes[: len(x)], y, xp, fakes[len(x):], yp])}

    def evaluate(self, state) -> dict[str, float]:
        G = mesh_lib.host_local(state.params["G"])  # several hosts: each translates its share of the photos
        return self.evaluator(lambda x: self._translate(G, x))

    def param_trees(self, state) -> dict[str, Any]:
        return dict(state.params)

    def architecture(self) -> dict:
        return {"model": "ResnetGenerator", "ngf": self.hparams.ngf, "n_blocks": self.hparams.n_blocks, "output_nc": 3}

    def as_loop_task(self, export) -> loop.TrainTask:
        return loop.TrainTask(
            init_state=self.init_state, train_step=self.train_step, step_inputs=self.step_inputs,
            batch_keys=pipeline.BATCH_KEYS, make_images=self.make_images, export=export,
            param_trees=self.param_trees, frozen=self.vgg_params,
            evaluate=self.evaluate if self.evaluator is not None else None,
        )


def export_translator(state, workdir: str, *, architecture: dict, source: dict) -> str:
    """Writes G to `<workdir>/translator` (model_io format, kind "translator")."""
    params = jax.device_get(state.params["G"])
    return model_io.save_model(
        os.path.join(workdir, "translator"), kind="translator", params=params, architecture=architecture,
        source=source, overwrite=True,
    )


def translate_sample(workdir: str, photo: np.ndarray, image_size: int) -> str:
    """Translates `photo` (`[H, W, 3]` uint8) with the exported translator at the training resolution.

    Writes `<workdir>/sample.png`: the photo as the network saw it, and its translation, side by side.
    """
    from scenimefy_jax.inference.translator import Translator

    translator = Translator.from_checkpoint(os.path.join(workdir, "translator"), max_side=image_size)
    anime = translator(photo)
    out = os.path.join(workdir, "sample.png")
    side_by_side = np.concatenate([translator.preprocess(photo), anime], axis=1)
    images.save_png(side_by_side, out)
    return out


def run(config) -> int:
    cache = config.compilation_cache
    with loop.compilation_cache(os.path.join(config.workdir, "xla_cache") if cache == "auto" else cache):
        return _run(config)


def _run(config) -> int:
    hparams = hparams_from_config(config)
    sources, description = resolve_sources(config)
    dataset, plan = pipeline.make_train_dataset(
        sources, image_size=config.data.image_size, global_batch=config.global_batch, seed=config.seed,
        num_workers=config.data.num_workers, flip=config.data.flip,
        max_unreadable_in_a_row=config.data.max_unreadable_in_a_row,
    )
    total_steps = config.num_steps or plan.steps_per_epoch * hparams.total_epochs
    _log.info(
        "training on %s: %d photos, %d anime, %d pairs; %d steps per epoch at global batch %d; %d steps on %d device(s)",
        description, len(sources.photos), len(sources.anime), len(sources.pair_photos), plan.steps_per_epoch,
        config.global_batch, total_steps, jax.device_count(),
    )
    pair_weights = [i2i_step.lambda_pair(hparams, e) for e in range(1, hparams.total_epochs + 1)]
    if any(abs(w - 1.0) > 1e-6 for w in pair_weights) and hparams.faithful_to == "official_code":
        _log.warning(
            "faithful_to=official_code with %d epochs: the official lambda_pair = cos(pi/2 * N * (e - 1)) is "
            "1.0 for every epoch only when N is a multiple of 4 (it is with the official N = 20); here it "
            "takes the values %s (docs/reference.md §2.7)", hparams.total_epochs, [round(w, 4) for w in pair_weights])
    vgg_params = None
    if hparams.lambda_VGG > 0:
        if not config.vgg_checkpoint:
            raise ConfigError("--config.model.lambda_VGG > 0 needs --config.vgg_checkpoint (a converted VGG19 directory)")
        try:
            vgg_params = model_io.load_model(config.vgg_checkpoint, expected_kind="vgg19").params
        except (ValueError, OSError) as e:
            raise ConfigError(f"--config.vgg_checkpoint={config.vgg_checkpoint!r}: {e}") from e
    evaluator = None
    if config.eval.every:
        evaluator = build_evaluator(config, sources)  # ConfigError: one line, exit status 2 (main.run_job)
    task = I2ITask(hparams=hparams, image_size=config.data.image_size, steps_per_epoch=plan.steps_per_epoch,
                   grid_images=config.grid_images, vgg_params=vgg_params, evaluator=evaluator)
    export = functools.partial(
        _export_and_sample, task=task, config=config, sources=sources, description=description
    )
    loop_config = loop.LoopConfig(
        workdir=config.workdir, total_steps=total_steps, global_batch=config.global_batch, seed=config.seed,
        log_every=config.log_every, images_every=config.images_every, checkpoint_every=config.checkpoint_every,
        eval_every=config.eval.every, keep_checkpoints=config.keep_checkpoints, async_checkpoints=config.async_checkpoints,
        tensorboard=config.tensorboard, hparams=config.to_dict(),
        # Every key but fingerprint.IGNORED (cadences, paths of outputs, workers, hosts) changes the steps.
        fingerprint=fingerprint.config_fingerprint(config), allow_config_change=config.allow_config_change,
    )
    try:
        result = loop.train(task.as_loop_task(export), dataset, loop_config)
    except pipeline.UnreadableDataError as e:
        _log.error("%s", e)  # one line, no traceback; the last checkpoint stays the latest
        return 1
    # 0 also after a SIGTERM (the checkpoint is saved and the same command resumes); 1 when it diverged.
    return 1 if result.diverged_at is not None else 0


def _eval_photos(config, sources) -> list[np.ndarray]:
    """The held-out photos at the training size: `eval.photos`, or (demo data) a held-out demo set."""
    from scenimefy_jax.data.image_files import find_inputs

    ev, size = config.eval, config.data.image_size
    if ev.photos:
        try:
            paths, _ = find_inputs(ev.photos)
        except ValueError as e:
            raise ConfigError(str(e).replace("--config.input", "--config.eval.photos")) from None
        loaded = []
        for path in paths[: ev.num_photos]:
            try:
                loaded.append(images.load_image(path))
            except images.ImageReadError as e:
                _log.warning("eval.photos: skipped %s", e)
    elif not (config.data.packed or config.data.unpaired or config.data.paired):
        # Demo data: scenes from a stream the training set never draws (it uses offsets 0, 1e6, 2e6).
        loaded = [demo.render_scene(config.seed, 3_000_000 + i, config.data.demo.size)[0]
                  for i in range(ev.num_photos)]
    else:
        raise ConfigError("--config.eval.every > 0 needs --config.eval.photos: a folder of held-out photos "
                              "(not the training photos)")
    if len(loaded) < 2:
        raise ConfigError(f"--config.eval.photos={ev.photos!r}: fewer than two readable photos")
    # The training transform without the flip: bicubic resize of both sides to image_size.
    return [pipeline.resize_square(p, size) for p in loaded]


def build_evaluator(config, sources):
    """The FID/KID evaluator of the `eval` options (docs/evaluation.md)."""
    from scenimefy_jax.convert.torch_checkpoint import CheckpointError
    from scenimefy_jax.evaluation import during_training, protocols
    from scenimefy_jax.evaluation.features import InceptionFeatures

    ev = config.eval
    if ev.every < 0:
        raise ConfigError(f"--config.eval.every must be >= 0 (0: off), got {ev.every}")
    if ev.protocol not in protocols.PROTOCOLS:
        raise ConfigError(f"--config.eval.protocol must be one of {', '.join(protocols.PROTOCOLS)}, got {ev.protocol!r}")
    if ev.num_photos < 2 or ev.batch_size < 1:
        raise ConfigError("--config.eval.num_photos must be >= 2 and --config.eval.batch_size >= 1")
    if not ev.inception:
        raise ConfigError("--config.eval.every > 0 needs --config.eval.inception: "
                              "pt_inception-2015-12-05-6726825d.pth or its converted directory (docs/evaluation.md)")
    try:
        if ev.inception == "random":
            _log.warning("eval.inception=random: the logged FID/KID values mean nothing (demo)")
            inception = InceptionFeatures.random(0, batch_size=ev.batch_size)
        else:
            inception = InceptionFeatures.from_checkpoint(ev.inception, batch_size=ev.batch_size)
    except (CheckpointError, ValueError, OSError) as e:
        raise ConfigError(f"--config.eval.inception={ev.inception!r}: cannot be loaded: {e}") from e
    photos = np.stack(_eval_photos(config, sources))
    cache = ev.cache if ev.cache != "auto" else os.path.join(config.workdir, "fid_cache")
    try:
        if ev.real:
            reference = during_training.load_reference(ev.real, None, inception, protocol=ev.protocol, cache_dir=cache)
        else:
            n = len(sources.anime) if not ev.num_real else min(ev.num_real, len(sources.anime))
            anime = []
            for i in range(n):
                try:
                    anime.append(sources.anime.load(i))
                except (images.ImageReadError, OSError) as e:
                    _log.warning("FID reference: skipped %s", e)
            reference = during_training.load_reference(None, anime, inception, protocol=ev.protocol, cache_dir=None)
    except ValueError as e:
        raise ConfigError(f"--config.eval.real={ev.real!r}: {e}") from e
    _log.info("FID/KID every %d steps: %d held-out photos vs %d reference images (%s protocol)",
              ev.every, len(photos), len(reference.features) if reference.features is not None else -1, ev.protocol)
    return during_training.GeneratorEvaluator(
        inception=inception, photos=photos, reference=reference, protocol=ev.protocol, batch_size=ev.batch_size,
        kid_subsets=ev.kid_subsets, kid_subset_size=ev.kid_subset_size)


def _export_and_sample(state, workdir, *, task: I2ITask, config, sources, description) -> None:
    if jax.process_index() != 0:
        return
    path = export_translator(state, workdir, architecture=task.architecture(),
                             source={"trained_on": description, "job": "i2i"})
    _log.info("translator exported to %s (load with Translator.from_checkpoint)", path)
    photo = images.load_image(config.sample_image) if config.sample_image else sources.photos.load(0)
    _log.info("translated sample written to %s", translate_sample(workdir, photo, config.data.image_size))
