"""The pseudo-pair job: `python -m scenimefy_jax.main --config=configs/pseudo_pairs.py` (docs/reference.md §3.3-3.6).

Renders candidates batch by batch (`candidates.py`), keeps those the segmenter accepts
(`selection.py`) and writes, in `<output>/`:

    trainA/<k>.png, trainB/<k>.png   accepted photo / anime pairs (identical names; the layout
                                     `configs/i2i.py --config.data.paired=<output>` reads)
    pairs.jsonl                      one record per candidate, in candidate order
    accepted_z.npy                   the z of the accepted pairs, in acceptance order
    summary.json                     acceptance rate, seg_loss quantiles, class frequencies, settings
    grid_accepted.png, grid_rejected.png, seg_loss_hist.png    what the filter does, at a glance
    run_config.json                  the settings that define the data set (checked on restart)

Names follow `generate_pair.py`: the k-th accepted pair (0-based) is `<num_pairs - 1 - k>.png`.

Restarts: `pairs.jsonl` is appended one whole batch at a time, after that batch's images are on disk
(each PNG written to a temporary name and renamed). A restarted run keeps the complete batches,
drops a partial one, and recomputes from there; since every candidate is a function of its index
and the batch boundaries are fixed by `batch_size` (part of `run_config.json`), it writes the same
bytes an uninterrupted run writes. A finished output is left alone unless `overwrite=True`; an output
made with other settings is refused, naming the settings that differ.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from scenimefy_jax.data import images as image_ops
from scenimefy_jax.data.atomic import write_json
from scenimefy_jax.pseudo_pairs import candidates as cand
from scenimefy_jax.pseudo_pairs import report, selection
from scenimefy_jax.parallel import mesh as mesh_lib

MANIFEST = "pairs.jsonl"
RUN_CONFIG = "run_config.json"
SUMMARY = "summary.json"
# Settings that define the data set; a restart with any of them changed is refused.
IDENTITY_KEYS = (
    "source", "target", "segmenter", "num_pairs", "seed", "seeds", "latents", "truncation", "truncation_mean",
    "truncation_seed", "noise", "noise_seed", "share_noise", "clamp_segmenter_input", "segment_size",
    "selection", "seg_loss_th", "seg_cat_th", "top_fraction", "batch_size", "segmenter_dtype", "random_generators",
    "random_segmenter", "demo_size",
)


class ConfigError(ValueError):
    """A bad config value; the message names the `--config.<option>`."""


@dataclasses.dataclass
class Stream:
    """Where candidate latents come from: a finite array (`latents` / `seeds`) or the seeded stream."""

    style_dim: int
    seed: int
    table: np.ndarray | None = None  # [N, D] for finite streams
    labels: list | None = None  # per-row label for the manifest ("seed" or "latent_row")
    label_key: str = "candidate"

    @property
    def finite(self) -> int | None:
        return None if self.table is None else len(self.table)

    def z(self, index: np.ndarray) -> np.ndarray:
        if self.table is None:
            return cand.latent_of_index(self.seed, index, self.style_dim)
        return self.table[index]

    def label(self, i: int) -> dict:
        if self.table is None:
            return {}
        return {self.label_key: self.labels[i]}


# ----------------------------------------------------------------------------- validation

def _identity(config) -> dict:
    return {k: config.get(k) for k in IDENTITY_KEYS}


def _validate(config) -> None:
    if not config.output:
        raise ConfigError("--config.output is required: the folder receiving trainA/, trainB/ and pairs.jsonl")
    if config.num_pairs < 1:
        raise ConfigError(f"--config.num_pairs must be >= 1, got {config.num_pairs}")
    if config.batch_size < 1:
        raise ConfigError(f"--config.batch_size must be >= 1, got {config.batch_size}")
    if config.selection not in selection.MODES:
        raise ConfigError(f"--config.selection must be one of {', '.join(selection.MODES)}, got {config.selection!r}")
    if not 0.0 < config.top_fraction <= 1.0:
        raise ConfigError(f"--config.top_fraction must be in (0, 1], got {config.top_fraction}")
    if config.noise not in ("random", "fixed"):
        raise ConfigError(f"--config.noise must be 'random' or 'fixed', got {config.noise!r}")
    if not 0.0 <= config.truncation <= 1.0:
        raise ConfigError(f"--config.truncation must be in [0, 1], got {config.truncation}")
    if config.segment_size < 0:
        raise ConfigError(f"--config.segment_size must be >= 0 (0: the generator's resolution), got {config.segment_size}")
    if config.segmenter_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"--config.segmenter_dtype must be 'float32' or 'bfloat16', got {config.segmenter_dtype!r}")
    if config.max_candidates < 0:
        raise ConfigError(f"--config.max_candidates must be >= 0 (0: 50 x num_pairs), got {config.max_candidates}")
    needed = ([] if config.random_generators else ["source", "target"]) + ([] if config.random_segmenter else ["segmenter"])
    for option in needed:
        if not config.get(option):
            raise ConfigError(f"--config.{option} is required (random models are for demos only: "
                              "--config.random_generators / --config.random_segmenter)")
        if not os.path.exists(config.get(option)):
            raise ConfigError(f"--config.{option}={config.get(option)!r}: no such file or directory")


def _check_existing(config) -> str:
    """'fresh', 'resume' or 'finished'; refuses an output made with other settings."""
    out = config.output
    run_config = os.path.join(out, RUN_CONFIG)
    if config.overwrite and os.path.exists(out):
        for name in ("trainA", "trainB"):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
        for name in (MANIFEST, RUN_CONFIG, SUMMARY, "accepted_z.npy"):
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
        return "fresh"
    if not os.path.exists(run_config):
        if os.path.isdir(os.path.join(out, "trainA")) and os.listdir(os.path.join(out, "trainA")):
            raise ConfigError(f"--config.output={out!r} already holds trainA/ images not made by this job; "
                              "choose another folder or --config.overwrite=True")
        return "fresh"
    try:
        with open(run_config) as f:
            previous = json.load(f)["identity"]
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"--config.output={out!r}: {RUN_CONFIG} is unreadable ({e}); --config.overwrite=True to redo") from e
    current = json.loads(json.dumps(_identity(config)))
    differing = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
    if differing:
        listed = ", ".join(f"{k} (was {previous.get(k)!r}, now {current.get(k)!r})" for k in differing)
        raise ConfigError(f"--config.output={out!r} was made with other settings: {listed}; "
                          "use another output folder or --config.overwrite=True")
    try:
        with open(os.path.join(out, SUMMARY)) as f:
            if json.load(f).get("complete"):
                return "finished"
    except (OSError, ValueError):
        pass
    return "resume"


# ----------------------------------------------------------------------------- models

def _load_models(config):
    from scenimefy_jax import sampling
    from scenimefy_jax.segmentation.segmenter import Segmenter

    from scenimefy_jax.pseudo_pairs import demo

    if config.random_generators:
        source, target = demo.random_generators(config.demo_size, config.seed)
    else:
        try:
            source = sampling.load_generator(config.source, option="source")
            target = sampling.load_generator(config.target, option="target")
        except sampling.ConfigError as e:
            raise ConfigError(str(e)) from e
    if (target.model.size, target.model.style_dim) != (source.model.size, source.model.style_dim):
        raise ConfigError("--config.target has another size or style_dim than --config.source")
    if config.random_segmenter:
        segmenter = demo.random_segmenter(config.segmenter_dtype)
    else:
        try:
            segmenter = Segmenter.from_checkpoint(config.segmenter, dtype=config.segmenter_dtype)
        except ValueError as e:  # CheckpointError is a ValueError
            raise ConfigError(f"--config.segmenter={config.segmenter!r}: {e}") from e
    return source, target, segmenter


def _stream(config, style_dim: int) -> Stream:
    from scenimefy_jax import sampling

    try:
        if config.latents:
            table = sampling.load_latents(config.latents, style_dim)
            return Stream(style_dim, config.seed, table, list(range(len(table))), "latent_row")
        if config.seeds:
            seeds = sampling.parse_seeds(config.seeds)
            return Stream(style_dim, config.seed, np.stack([sampling.z_from_seed(s, style_dim) for s in seeds]),
                          seeds, "seed")
    except sampling.ConfigError as e:
        raise ConfigError(str(e)) from e
    return Stream(style_dim, config.seed)


# ----------------------------------------------------------------------------- manifest

def _read_manifest(path: str, batch_size: int) -> list[dict]:
    """The records of complete batches (a torn last line or a partial batch is dropped)."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # torn write
            try:
                records.append(json.loads(line))
            except ValueError:
                break
    complete = len(records) // batch_size * batch_size
    # A finished run may end inside a batch; the caller only resumes unfinished runs.
    return records[:complete]


def _rewrite_manifest(path: str, records: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _append(path: str, records: list[dict]) -> None:
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- the job

class PairGenerator:
    """Holds the networks, the jitted candidate step and the candidate stream of one run."""

    def __init__(self, config, source, target, segmenter):
        self.config = config
        self.source, self.target, self.segmenter = source, target, segmenter
        self.mesh = mesh_lib.make_mesh()
        self.options = cand.CandidateOptions(
            truncation=float(config.truncation), noise=config.noise, share_noise=bool(config.share_noise),
            clamp_segmenter_input=bool(config.clamp_segmenter_input), segment_size=int(config.segment_size))
        fn = cand.make_candidate_fn(source, target, segmenter.sem_seg_fn, self.options)
        self.step = cand.jit_candidate_fn(fn, self.mesh)
        host = lambda tree: jax.tree_util.tree_map(np.asarray, tree)  # noqa: E731
        self.variables_s = mesh_lib.replicate(host(source.variables), self.mesh)
        self.variables_t = mesh_lib.replicate(host(target.variables), self.mesh)
        self.seg_params = mesh_lib.replicate(host(segmenter.params), self.mesh)
        self.noise_key = mesh_lib.replicate(np.asarray(jax.random.key_data(jax.random.key(int(config.noise_seed)))),
                                            self.mesh)
        self.w_avg = mesh_lib.replicate(np.asarray(self._w_avg()), self.mesh)
        mesh_lib.check_global_batch(config.batch_size, self.mesh)

    def _w_avg(self):
        g = self.source.model
        if self.config.truncation >= 1:
            return jnp.zeros((1, g.style_dim))
        # docs/reference.md §3.3 step 1: the source mapping averaged over `truncation_mean` z's.
        return jax.jit(lambda v, k: g.apply(v, k, self.config.truncation_mean, method=g.mean_latent))(
            self.source.variables, jax.random.key(int(self.config.truncation_seed)))

    def run_batch(self, stream: Stream, index: np.ndarray) -> dict:
        """Candidates `index` (at most `batch_size`, padded with the last one) -> host numpy results."""
        count = len(index)
        padded = np.concatenate([index, np.full(self.config.batch_size - count, index[-1])]).astype(np.int64)
        local = self._local_rows({"z": stream.z(padded), "index": padded.astype(np.int32)})
        out = self.step(self.variables_s, self.variables_t, self.seg_params, self.w_avg,
                        mesh_lib.shard_batch(local["z"], self.mesh),
                        mesh_lib.shard_batch(local["index"], self.mesh), self.noise_key)
        return {k: v[:count] for k, v in _gather(out).items()}

    def _local_rows(self, batch):
        n, p = jax.process_count(), jax.process_index()
        rows = self.config.batch_size // n
        return {k: v[p * rows:(p + 1) * rows] for k, v in batch.items()}


def _gather(tree) -> dict:
    """Global arrays -> full host numpy arrays on every process."""
    if jax.process_count() == 1:
        return {k: np.asarray(v) for k, v in tree.items()}
    from jax.experimental import multihost_utils

    return {k: np.asarray(v) for k, v in multihost_utils.process_allgather(tree, tiled=True).items()}


def run(config) -> int:
    try:
        _validate(config)
        state = _check_existing(config)
    except ConfigError as e:
        logging.error("%s", e)
        return 2
    if state == "finished":
        logging.info("%s already holds the finished data set (%s); --config.overwrite=True to redo",
                     config.output, os.path.join(config.output, SUMMARY))
        return 0
    try:
        source, target, segmenter = _load_models(config)
        stream = _stream(config, source.model.style_dim)
    except ConfigError as e:
        logging.error("%s", e)
        return 2
    if config.random_segmenter:
        logging.warning("random_segmenter: the segmenter has random weights, so which pairs it keeps or rejects "
                        "means nothing (this shows the pipeline, not a data set)")
    if config.random_generators:
        logging.warning("random_generators: small random-weight generators stand in for G_s and G_t")
    out = config.output
    for name in ("trainA", "trainB"):
        os.makedirs(os.path.join(out, name), exist_ok=True)
    is_writer = jax.process_index() == 0
    manifest = os.path.join(out, MANIFEST)
    if is_writer:
        write_json(os.path.join(out, RUN_CONFIG), {"identity": _identity(config)})
    records = _read_manifest(manifest, config.batch_size) if state == "resume" else []
    if is_writer:
        _rewrite_manifest(manifest, records)
    accepted = sum(r["accepted"] for r in records)
    start = len(records)
    if start:
        logging.info("resuming %s after candidate %d (%d pairs accepted so far)", out, start - 1, accepted)

    generator = PairGenerator(config, source, target, segmenter)
    limit = config.max_candidates or 50 * config.num_pairs
    if stream.finite is not None:
        limit = min(limit, stream.finite)
    bs, n_pairs = config.batch_size, config.num_pairs
    bar = tqdm(total=n_pairs, initial=accepted, unit="pair", desc="pseudo pairs", disable=not config.progress)
    t0 = time.perf_counter()
    pending = None  # (futures, records) of the previous batch, finished while the next one computes
    with concurrent.futures.ThreadPoolExecutor(max(1, config.write_workers)) as pool:
        while accepted < n_pairs and start < limit:
            count = min(bs, limit - start)
            result = generator.run_batch(stream, np.arange(start, start + count))
            if pending is not None:
                _finish(pending, manifest, is_writer)
            decisions = selection.accept(result["seg_loss"], result["seg_classes"], mode=config.selection,
                                         seg_loss_th=config.seg_loss_th, seg_cat_th=config.seg_cat_th,
                                         top_fraction=config.top_fraction)
            batch_records, futures = [], []
            for j in range(count):
                i = start + j
                record = {"candidate": i, **stream.label(i), "seg_loss": float(result["seg_loss"][j]),
                          "seg_classes": int(result["seg_classes"][j]),
                          "classes": np.flatnonzero(result["present"][j]).tolist(),
                          "accepted": bool(decisions[j]) and accepted < n_pairs, "name": None}
                if record["accepted"]:
                    record["name"] = f"{n_pairs - 1 - accepted}.png"
                    accepted += 1
                    bar.update(1)
                    if is_writer:  # every process has the whole batch; the first one writes
                        for folder, key in (("trainA", "photo"), ("trainB", "anime")):
                            futures.append(pool.submit(image_ops.save_png, result[key][j],
                                                       os.path.join(out, folder, record["name"])))
                batch_records.append(record)
                if accepted == n_pairs:
                    break  # the data set is complete; later candidates of this batch are not recorded
            pending = (futures, batch_records)
            start += count
            bar.set_postfix(candidates=start, rate=f"{accepted / max(start, 1):.2f}")
        if pending is not None:
            _finish(pending, manifest, is_writer)
    bar.close()
    elapsed = time.perf_counter() - t0
    if jax.process_count() > 1:  # the first process has appended the last batch before anyone reads it
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("pseudo_pairs: manifest complete")
    records = _read_all(manifest)
    if accepted < n_pairs:
        logging.error("stopped after %d candidates with %d of %d pairs accepted (%s); nothing more to try: "
                      "raise --config.max_candidates, or check the thresholds / --config.selection",
                      len(records), accepted, n_pairs,
                      "the latents ran out" if stream.finite is not None and start >= stream.finite
                      else f"--config.max_candidates={limit}")
    report.write_outputs(config, generator, stream, records, elapsed, complete=accepted >= n_pairs)
    logging.info("%d pairs from %d candidates in %.1f s -> %s", accepted, len(records), elapsed, out)
    return 0 if accepted >= n_pairs else 1


def _finish(pending, manifest: str, is_writer: bool) -> None:
    futures, records = pending
    for f in futures:
        f.result()  # raises the writer's error, if any: nothing of this batch is recorded then
    if is_writer:
        _append(manifest, records)


def _read_all(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


__all__: list[Any] = ["run", "ConfigError", "IDENTITY_KEYS"]
