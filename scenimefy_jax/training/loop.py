"""The generic training loop shared by the training jobs (translation, StyleGAN fine-tuning).

A job describes itself as a `TrainTask` (how to build its state, its pure step, its per-step schedule
values, its image grids, its export) and hands the loop an input pipeline. The loop owns everything
else, once, for every job:

* the device mesh (`parallel/mesh.py`): batches sharded on the data axis, the state replicated;
* `jax.jit` of the step with the state donated, the step's PRNG key `fold_in(base_key, step)` (so a
  resumed run draws exactly the keys an uninterrupted run would);
* init, or restore from the latest checkpoint (state, step, PRNG key, data iterator position) once
  its stored config fingerprint matches the current one (`fingerprint.py`);
* the loss averages, console progress (steps/s, images/s, ETA), `metrics.jsonl`, TensorBoard
  scalars and image grids, the parameter overview at start;
* checkpoints every N steps and at the end; SIGTERM -> save -> clean exit; the final export.

Restarting the same command after a stop (preemption, crash, kill) resumes from the latest
checkpoint; on CPU the result is bit-identical to an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging as py_logging
import os
import time
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from scenimefy_jax.data.image_files import ConfigError
from scenimefy_jax.model_io import quiet_orbax_logs
from scenimefy_jax.parallel import distributed, mesh as mesh_lib
from scenimefy_jax.training import checkpointing, fingerprint as fingerprint_lib, metrics as metrics_lib

_log = py_logging.getLogger(__name__)

State = Any
Batch = Mapping[str, Any]


@contextlib.contextmanager
def compilation_cache(directory: str | None):
    """XLA's persistent compilation cache in `directory` for the duration of a job (None: unchanged).

    `jax.config` is process-global: a job run from Python (a notebook, a test) must not leave its cache
    settings behind, so the previous values are restored on exit.
    """
    if not directory:
        yield
        return
    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    try:
        yield
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


@dataclasses.dataclass(frozen=True)
class TrainTask:
    """What a training job plugs into `train`.

    init_state:  `rng -> state`, pure (jitted here with replicated outputs). `state` is any pytree of
                 arrays (e.g. a flax `struct.PyTreeNode` of parameters and optimiser states).
    train_step:  `(state, batch, rng, step_inputs) -> (state, metrics)`, pure; `batch` holds global
                 `[B, ...]` arrays sharded on the data axis; `step_inputs` a dict of float32 scalars
                 (schedule values) traced, so they never trigger recompilation; `metrics` scalars.
    step_inputs: host function `step -> {name: float}` (learning-rate multiplier, temperatures...),
                 given the 0-based index of the step about to run. Also logged with the metrics.
    batch_keys:  which entries of the pipeline's host batches go to the step (others, such as item
                 positions, stay on the host).
    make_images: optional `(state, host_batch) -> {name: [H, W, 3] uint8}` image grids, called every
                 `images_every` steps with the state after the step and this host's numpy rows of
                 that step's batch (global arrays are not readable from one host of several).
    export:      optional `(state, workdir) -> None`, called once when `total_steps` is reached.
    param_trees: optional `state -> {name: params}` for the parameter overview at start.
    frozen:      optional pytree of frozen arrays (e.g. VGG or CLIP weights) that the step reads but
                 never updates; replicated on the mesh once and passed as a fifth argument
                 `train_step(state, batch, rng, step_inputs, frozen)` (a jit argument, not a
                 compile-time constant). Not checkpointed: the job loads it again on restart.
    evaluate:    optional `state -> {name: float}` (e.g. FID on held-out data), called every
                 `eval_every` steps and at the end; its values are written like the losses.
    """

    init_state: Callable[[jax.Array], State]
    train_step: Callable[[State, Batch, jax.Array, Mapping[str, jax.Array]], tuple[State, Mapping[str, jax.Array]]]
    step_inputs: Callable[[int], Mapping[str, float]]
    batch_keys: tuple[str, ...]
    make_images: Callable[[State, Batch], Mapping[str, np.ndarray]] | None = None
    export: Callable[[State, str], None] | None = None
    param_trees: Callable[[State], Mapping[str, Any]] | None = None
    frozen: Any = None
    evaluate: Callable[[State], Mapping[str, float]] | None = None


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    workdir: str
    total_steps: int
    global_batch: int
    seed: int = 0
    log_every: int = 50  # loss averages, steps/s, images/s, ETA
    images_every: int = 500  # image grids (0: never)
    eval_every: int = 0  # task.evaluate (0: never)
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    async_checkpoints: bool = True
    tensorboard: bool = True
    hparams: Mapping[str, Any] | None = None  # written once at start (flattened config)
    # The settings that define the computation (`fingerprint.config_fingerprint`, JSON values): stored in
    # every checkpoint and compared before a resume; a difference refuses it (None: nothing is checked).
    fingerprint: Mapping[str, Any] | None = None
    allow_config_change: bool = False  # resume despite a changed fingerprint (logged as a warning)


@dataclasses.dataclass
class TrainResult:
    step: int  # steps completed (including those before a resume)
    state: State
    finished: bool  # reached total_steps (False: stopped early by a signal, a hook or divergence)
    resumed_from: int | None
    diverged_at: int | None = None  # first step (1-based) whose losses or state were not finite


StepHook = Callable[[int, State, Mapping[str, np.ndarray]], bool | None]
"""`hook(step, state, host_batch)` after each step; returning True stops the loop like a preemption."""


def _compile_then_meet(step_fn, args):
    """Several hosts: compiles the step ahead of time, then waits for every host to have done so.

    Hosts compile at different speeds; the first step's cross-host reduction must not start on one host
    while another still compiles (the CPU backend's collectives give up after 30 s)."""
    compiled = step_fn.lower(*args).compile()
    distributed.barrier("scenimefy_jax/loop/compiled")
    return compiled


def _as_inputs(values: Mapping[str, float]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float32) for k, v in values.items()}


def train(
    task: TrainTask,
    dataset: Iterable[Mapping[str, np.ndarray]],
    config: LoopConfig,
    *,
    mesh: jax.sharding.Mesh | None = None,
    hooks: tuple[StepHook, ...] = (),
    writer: metrics_lib.MetricWriter | None = None,
) -> TrainResult:
    """Trains `task` on `dataset` (an iterable of this host's batches with resumable iterator state).

    Host batches may carry `"skipped"` (`[B_local]` ints: items the pipeline dropped before each row,
    e.g. for unreadable files); their sum over each report interval is written as `data/skipped_items`
    and the run's total is logged at the end.

    Raises `ConfigError` (before any step) when the latest checkpoint was written with another
    `config.fingerprint`, unless `config.allow_config_change`. An exception out of the steps or the
    data iterator propagates after the checkpoint writes in flight, the metrics and the iterator are
    closed; no checkpoint is written for it (the last one saved stays the latest).
    """
    quiet_orbax_logs()
    mesh = mesh or mesh_lib.make_mesh()
    mesh_lib.check_global_batch(config.global_batch, mesh)
    os.makedirs(config.workdir, exist_ok=True)
    writer = writer or metrics_lib.create_default_writer(config.workdir, tensorboard=config.tensorboard)
    checkpointer = iterator = None
    try:
        checkpointer = checkpointing.Checkpointer(
            os.path.join(config.workdir, "checkpoints"), save_every=config.checkpoint_every,
            keep=config.keep_checkpoints, async_save=config.async_checkpoints,
        )
        iterator = iter(dataset)
        return _train(task, iterator, config, mesh=mesh, hooks=hooks, writer=writer, checkpointer=checkpointer)
    except Exception:
        _close_after_error(checkpointer, writer, iterator)
        raise


_FINGERPRINT = "config_fingerprint"  # its key in the checkpoints' metadata


def _checked_fingerprint(config: LoopConfig, checkpointer: checkpointing.Checkpointer,
                         step: int | None) -> dict[str, Any] | None:
    """The fingerprint to store from now on, after comparing it with the one saved at `step`.

    Reads only the checkpoint's metadata, before the state is restored: a changed network width would
    otherwise fail inside Orbax with a shape error instead of naming the setting.
    """
    if config.fingerprint is None:
        return None
    current = json.loads(json.dumps(dict(config.fingerprint), sort_keys=True))
    if step is None:
        return current
    saved = checkpointer.saved_meta(step).get(_FINGERPRINT)
    if saved is None:
        _log.warning("the checkpoint of step %d in %s has no config fingerprint (written before they were "
                     "stored): resuming without checking that the settings are unchanged", step, checkpointer.directory)
        return current
    changes = fingerprint_lib.differences(saved, current)
    if not changes:
        return current
    listed = "; ".join(changes)
    if not config.allow_config_change:
        raise ConfigError(
            f"the checkpoint of step {step} in {checkpointer.directory} was trained with other settings ({listed}); "
            "use a new workdir, or pass --config.allow_config_change=True to continue it with the new ones")
    _log.warning("allow_config_change: resuming the checkpoint of step %d with changed settings (%s); "
                 "later checkpoints store the new ones", step, listed)
    return current


def _close_after_error(checkpointer, writer, iterator) -> None:
    """Releases what `train` opened when it stops on an exception: waits for the checkpoint writes in
    flight (so the latest checkpoint is complete), closes the metrics files, stops the data workers.
    A failure here is logged, never raised over the original exception."""
    closers = (("checkpointer", getattr(checkpointer, "close", None)), ("metrics writer", writer.close),
               ("data iterator", getattr(iterator, "close", None)))
    for what, close in closers:
        if close is None:
            continue
        try:
            close()
        except Exception:  # noqa: BLE001 - the exception being raised is the one to report
            _log.exception("closing the %s after an error failed", what)


def _train(task: TrainTask, iterator, config: LoopConfig, *, mesh, hooks, writer, checkpointer) -> TrainResult:
    replicated = mesh_lib.replicated(mesh)
    init_key, base_key = jax.random.split(jax.random.key(config.seed))

    # Checkpointed: the train state and the raw base key (so a resumed run keeps its key stream
    # even if the seed in the config was edited in between).
    init_fn = jax.jit(lambda k: {"train": task.init_state(k), "rng": jax.random.key_data(base_key)},
                      out_shardings=replicated)
    resumed_from = checkpointer.latest_step()
    fingerprint = _checked_fingerprint(config, checkpointer, resumed_from)
    save_meta = {} if fingerprint is None else {_FINGERPRINT: fingerprint}  # stored with every checkpoint
    if resumed_from is None:
        tree = init_fn(init_key)
        step = 0
    else:
        abstract = jax.eval_shape(init_fn, init_key)
        abstract = jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), abstract)
        tree, meta = checkpointer.restore(resumed_from, abstract, iterator)
        step = int(meta["step"])
        _log.info("resumed from the checkpoint of step %d in %s", step, checkpointer.directory)
    state, rng_data = tree["train"], tree["rng"]
    base_key = jax.random.wrap_key_data(rng_data)

    if config.hparams is not None and resumed_from is None:
        writer.write_hparams(dict(config.hparams))
    if task.param_trees is not None:
        for name, params in task.param_trees(state).items():
            table = metrics_lib.log_parameter_overview(params, name)
            if resumed_from is None:
                writer.write_texts(0, {f"parameters/{name}": "```\n" + table + "\n```"})

    frozen = mesh_lib.replicate(task.frozen, mesh) if task.frozen is not None else None

    def update(state, batch, key, step, inputs, frozen, first_bad):
        rng = jax.random.fold_in(key, step)
        if frozen is None:
            state, step_metrics = task.train_step(state, batch, rng, inputs)
        else:
            state, step_metrics = task.train_step(state, batch, rng, inputs, frozen)
        # Divergence guard, on device so that no step waits for the host: the first 0-based step whose
        # metrics or new state hold a NaN/inf (-1: none yet). One scalar is read at reports and saves.
        def all_finite(tree):
            return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
                                        if jnp.issubdtype(x.dtype, jnp.inexact)] or [True]))

        metrics_ok, state_ok = all_finite(step_metrics), all_finite(state)
        # first_bad = [0-based step or -1, 1 if that step's metrics were non-finite (else only the state)]
        new = jnp.stack([step, (~metrics_ok).astype(jnp.int32)]).astype(jnp.int32)
        first_bad = jnp.where((first_bad[0] < 0) & ~(metrics_ok & state_ok), new, first_bad)
        return state, step_metrics, first_bad

    # The state is donated: its buffers are reused for the new state (halves peak memory).
    update = jax.jit(update, donate_argnums=0, out_shardings=(replicated, replicated, replicated))
    first_bad = jax.device_put(jnp.asarray([-1, 0], jnp.int32), replicated)
    diverged_at = None

    def diverged() -> bool:
        """True (after logging which terms) once a step produced non-finite losses or state."""
        nonlocal diverged_at
        bad, metrics_bad = (int(v) for v in np.asarray(first_bad))
        if bad < 0:
            return False
        diverged_at = bad + 1
        terms = sorted(k for k, v in averages.peek().items() if not np.isfinite(v)) if metrics_bad else []
        what = f"loss terms ({', '.join(terms)})" if terms else "parameters or optimiser state"
        last = checkpointer.latest_step()
        _log.error(
            "step %d produced a non-finite value in its %s; training stops here and the last finite checkpoint (%s) is kept. "
            "Resuming repeats the same computation: lower the learning rate or change the data first.",
            diverged_at, what, f"step {last}" if last is not None else "none yet")
        return True

    averages = metrics_lib.LossAverages()
    progress = metrics_lib.ProgressReporter(
        total_steps=config.total_steps, global_batch=config.global_batch, start_step=step)
    stopped = False
    first_step_of_run = True
    # Items the pipeline dropped (host batches' "skipped"): since the last report (None: the pipeline
    # reports none) and in this run (since the start or the resume).
    skipped_interval, skipped_run = None, 0
    with checkpointing.PreemptionGuard() as guard:
        while step < config.total_steps:
            if guard.requested or checkpointer.reached_preemption(step):
                stopped = True
                break
            host_batch = next(iterator)
            if "skipped" in host_batch:
                n = int(np.sum(host_batch["skipped"]))
                skipped_interval, skipped_run = (skipped_interval or 0) + n, skipped_run + n
            batch = mesh_lib.shard_batch({k: host_batch[k] for k in task.batch_keys}, mesh)
            inputs_host = task.step_inputs(step)
            args = (state, batch, base_key, jnp.asarray(step, jnp.int32), _as_inputs(inputs_host), frozen, first_bad)
            if first_step_of_run and jax.process_count() > 1:
                update = _compile_then_meet(update, args)
            state, step_metrics, first_bad = update(*args)
            step += 1
            averages.update(step_metrics)
            if first_step_of_run:
                # The first step includes compilation; time the rest.
                jax.block_until_ready(step_metrics)
                progress.restart_clock(step)
                first_step_of_run = False
            if (step % config.log_every == 0 or step == config.total_steps
                    or checkpointer.due(step)) and diverged():
                stopped = True
                break
            if step % config.log_every == 0 or step == config.total_steps:
                scalars = averages.compute_and_reset()
                scalars.update(progress.report(step))
                scalars.update({f"schedule/{k}": float(v) for k, v in inputs_host.items()})
                if skipped_interval is not None:
                    scalars["data/skipped_items"], skipped_interval = skipped_interval, 0
                writer.write_scalars(step, scalars)
            if task.make_images is not None and config.images_every and (
                step % config.images_every == 0 or step == config.total_steps
            ):
                writer.write_images(step, task.make_images(state, host_batch))
                progress.restart_clock(step)
            if task.evaluate is not None and config.eval_every and (
                step % config.eval_every == 0 or step == config.total_steps
            ):
                started = time.perf_counter()
                scores = dict(task.evaluate(state))
                scores["eval/seconds"] = time.perf_counter() - started
                writer.write_scalars(step, scores)
                progress.restart_clock(step)
            if step < config.total_steps and checkpointer.save(step, {"train": state, "rng": rng_data}, iterator, save_meta):
                progress.restart_clock(step)
            if any([bool(hook(step, state, host_batch)) for hook in hooks]):
                stopped = True
                break

    finished = step >= config.total_steps and diverged_at is None
    if diverged_at is None and diverged():  # a stop by signal or hook: never save a non-finite state
        finished = False
    if diverged_at is None and checkpointer.latest_step() != step:
        checkpointer.save(step, {"train": state, "rng": rng_data}, iterator, save_meta, force=True)
    checkpointer.close()
    if skipped_run:
        _log.warning("%d training items were skipped in this run (steps %d-%d): the pipeline could not read them",
                     skipped_run, (resumed_from or 0) + 1, step)
    if stopped and not finished and diverged_at is None:
        _log.warning("stopped at step %d of %d; run the same command again to resume", step, config.total_steps)
    if finished and task.export is not None:
        task.export(state, config.workdir)
    writer.flush()
    writer.close()
    if hasattr(iterator, "close"):
        iterator.close()
    return TrainResult(step=step, state=state, finished=finished, resumed_from=resumed_from,
                       diverged_at=diverged_at)
