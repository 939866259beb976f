"""Inception pool3 features of image folders and of translated images, batched on the local devices.

    from scenimefy_jax.evaluation.features import InceptionFeatures, folder_features
    inception = InceptionFeatures.from_checkpoint("pt_inception-2015-12-05-6726825d.pth")
    result = folder_features(paths, inception, protocol="pytorch_fid")     # result.features: [N, 2048]

`InceptionFeatures` runs pytorch-fid's FID Inception-v3 (`models/inception.py`) as one jitted program
per batch size: a batch is split over every local device on the data axis of the shared mesh and the
parameters are replicated; a short last batch is padded with blank images to a power of two (and a
multiple of the device count), so a folder compiles a few programs only.

Images are decoded and put through the protocol's resize (`protocols.preprocess`, docs/reference.md
§6.1) in worker threads on the host while the devices run the network; a file that cannot be read is
named in `failures` and skipped, never fatal. `cached_folder_statistics` keeps the features of a
reference folder in a statistics file keyed by the folder's listing (names, sizes, modification
times), the protocol and the network, so a folder of real images is measured once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from scenimefy_jax import model_io
from scenimefy_jax.data.image_files import prefetch_images
from scenimefy_jax.evaluation import metrics, protocols
from scenimefy_jax.models.inception import NUM_FEATURES, FIDInceptionV3, random_params
from scenimefy_jax.parallel import distributed, mesh as mesh_lib

KIND = "fid_inception"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
CACHE_FORMAT = 1  # bump when what a cached file means changes; old files are then recomputed


def default_batch_size() -> int:
    """50 images per batch on accelerators (pytorch-fid's default); on CPU one image per device, which
    measured fastest per image there (benchmarks/inception_cpu.json: 7.2 features/s at batch 1 against
    6.0 at batch 8 and 5.7 at batch 16 on 2 cores)."""
    devices = jax.local_devices()
    return len(devices) if devices[0].platform == "cpu" else 50


class InceptionFeatures:
    """The FID Inception-v3 on the local devices: `[B, 299, 299, 3]` network inputs -> `[B, 2048]` features.

    Args:
      params: the `FIDInceptionV3` parameter tree (from the converter, `model_io` or `random_params`).
      dtype: "float32" (default; the reference numbers) or "bfloat16" (faster on TPU/GPU; FID then
        differs from the float32 value and must not be compared with published numbers).
      batch_size: most images run at once.
      source: `{"path", "sha256"}` of the weights, recorded with every number measured with them.
    """

    def __init__(self, params, *, dtype: str = "float32", batch_size: int = 50, source: dict | None = None):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dtype = dtype
        self.batch_size = batch_size
        self.source = dict(source or {"path": None, "sha256": None})
        self.mesh = mesh_lib.make_mesh(jax.local_devices())
        replicated, sharded = mesh_lib.replicated(self.mesh), mesh_lib.data_sharded(self.mesh)
        self.params = jax.device_put(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params), replicated)
        model = FIDInceptionV3(dtype=DTYPES[dtype])
        self._forward = jax.jit(lambda p, x: model.apply({"params": p}, x),
                                in_shardings=(replicated, sharded), out_shardings=sharded)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs) -> "InceptionFeatures":
        """`pt_inception-2015-12-05-6726825d.pth` (or torch-fidelity's copy), or a converted directory."""
        from scenimefy_jax import convert

        path = os.fspath(path)
        if model_io.is_saved_model(path):
            saved = model_io.load_model(path, expected_kind=KIND)
            sha = (saved.metadata.get("source") or {}).get("sha256")
            return cls(saved.params, source={"path": os.path.abspath(path), "sha256": sha}, **kwargs)
        converted = convert.convert_file(path, kind=KIND)
        return cls(converted.params, source={"path": os.path.abspath(path), "sha256": convert.checkpoint_sha256(path)},
                   **kwargs)

    @classmethod
    def random(cls, seed: int = 0, **kwargs) -> "InceptionFeatures":
        """Random weights: for demos and tests only; its FID values mean nothing."""
        return cls(random_params(seed), source={"path": f"random:{seed}", "sha256": None}, **kwargs)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """`[B, H, W, 3]` float32 network inputs (see `protocols`) -> `[B, 2048]` float32 features."""
        inputs = np.asarray(inputs, np.float32)
        if inputs.ndim != 4 or inputs.shape[-1] != 3:
            raise ValueError(f"expected network inputs [B, H, W, 3], got shape {inputs.shape}")
        out = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start:start + self.batch_size]
            n = len(chunk)
            padded = mesh_lib.padded_batch_size(n, self.batch_size, self.mesh.size)
            if padded > n:
                chunk = np.concatenate([chunk, np.zeros((padded - n, *chunk.shape[1:]), np.float32)])
            out.append(np.asarray(self._forward(self.params, mesh_lib.local_batch(chunk, self.mesh)))[:n])
        return np.concatenate(out) if out else np.zeros((0, NUM_FEATURES), np.float32)

    def stream(self, items: Iterable[tuple[object, np.ndarray]]) -> Iterator[tuple[list, np.ndarray]]:
        """`(key, [299, 299, 3] network input)` pairs -> `(keys, [n, 2048] features)` per full batch."""
        keys, batch = [], []
        for key, x in items:
            keys.append(key)
            batch.append(x)
            if len(batch) == self.batch_size:
                yield keys, self(np.stack(batch))
                keys, batch = [], []
        if batch:
            yield keys, self(np.stack(batch))


@dataclasses.dataclass(frozen=True)
class FolderFeatures:
    paths: list[str]  # the images measured, in input order
    features: np.ndarray  # [N, 2048] float32
    failures: dict[str, str]  # unreadable files -> why


def protocol_transform(protocol: str):
    """The per-image host function `[H, W, 3] uint8 -> [299, 299, 3] float32` of a protocol."""
    if protocol not in protocols.PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(protocols.PROTOCOLS)}")
    return lambda image: protocols.preprocess(image, protocol)


def features_of_images(images: Iterable[tuple[object, np.ndarray]], inception: InceptionFeatures, protocol: str,
                       ) -> tuple[list, np.ndarray]:
    """Features of in-memory `(key, [H, W, 3] uint8)` images (e.g. translations): `(keys, [N, 2048])`."""
    transform = protocol_transform(protocol)
    keys, chunks = [], []
    for k, f in inception.stream((key, transform(image)) for key, image in images):
        keys += k
        chunks.append(f)
    return keys, np.concatenate(chunks) if chunks else np.zeros((0, NUM_FEATURES), np.float32)


def folder_features(paths: Sequence[str], inception: InceptionFeatures, *, protocol: str, workers: int = 2,
                    progress: bool = True, desc: str = "features") -> FolderFeatures:
    """Features of image files; unreadable ones are skipped and listed in `failures`.

    On several hosts each measures every `process_count`-th file on its own devices, and every host
    gets all the features back in the order of `paths` (`gather_in_order`), as one host would."""
    failures: dict[str, str] = {}
    share = distributed.process_share(paths)
    decoded = prefetch_images(share, None, workers, failures, transform=protocol_transform(protocol))
    done, chunks = [], []
    with tqdm(total=len(share), unit="img", desc=desc, disable=not progress) as bar:
        for keys, feats in inception.stream(decoded):
            done += keys
            chunks.append(feats)
            bar.update(len(done) + len(failures) - bar.n)
        bar.update(len(share) - bar.n)
    features = np.concatenate(chunks) if chunks else np.zeros((0, NUM_FEATURES), np.float32)
    return gather_in_order(paths, done, features, failures)


def gather_in_order(paths: Sequence[str], done: Sequence[str], features: np.ndarray,
                    failures: dict[str, str]) -> FolderFeatures:
    """Every host's `(done, features, failures)` of its share of `paths`, merged on every host, the rows
    in the order of `paths` (KID's subsets depend on it). One host: returned as it is."""
    if jax.process_count() == 1:
        return FolderFeatures(paths=list(done), features=features, failures=failures)
    parts = distributed.gather_json({"done": list(done), "failures": failures})
    rows = distributed.gather_rows(np.asarray(features, np.float32).reshape(-1, NUM_FEATURES))
    all_done = [p for part in parts for p in part["done"]]
    position = {p: i for i, p in enumerate(paths)}
    order = np.argsort([position[p] for p in all_done], kind="stable")
    merged = {k: v for part in parts for k, v in part["failures"].items()}
    return FolderFeatures(paths=[all_done[i] for i in order], features=rows[order],
                          failures={p: merged[p] for p in paths if p in merged})


# ----------------------------------------------------------------------------- cached reference statistics

def folder_fingerprint(paths: Sequence[str]) -> str:
    """SHA-256 over each file's absolute path, size and modification time (changes when a file does)."""
    h = hashlib.sha256()
    for path in paths:
        st = os.stat(path)
        h.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cache_key(paths: Sequence[str], inception: InceptionFeatures, protocol: str) -> dict:
    return {"cache_format": CACHE_FORMAT, "files": folder_fingerprint(paths), "n_files": len(paths),
            "protocol": protocol, "inception": inception.source.get("sha256") or inception.source.get("path"),
            "dtype": inception.dtype}


def cached_folder_statistics(paths: Sequence[str], inception: InceptionFeatures, *, protocol: str,
                             cache_dir: str | None, workers: int = 2, progress: bool = True,
                             desc: str = "real") -> tuple[metrics.Statistics | None, dict[str, str], bool]:
    """Statistics (with features) of a reference folder, from `cache_dir` when this folder, protocol and
    network were measured before. Returns `(statistics, failures, from_cache)`; statistics are None
    when fewer than two images could be read. The failures of a cached run are remembered with it.
    Random-weight networks are never cached."""
    key = _cache_key(paths, inception, protocol)
    cacheable = bool(cache_dir) and inception.source.get("sha256") is not None
    path = None
    if cacheable:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        path = os.path.join(cache_dir, f"fid_reference_{digest}.npz")
        if os.path.exists(path):
            try:
                stats = metrics.load_statistics(path)
            except ValueError as e:
                logging.warning("ignoring the unreadable cache file %s (%s); measuring again", path, e)
            else:
                if (stats.metadata or {}).get("cache_key") == key and stats.features is not None:
                    logging.info("reference statistics of %d images read from the cache %s", len(stats.features), path)
                    return stats, dict(stats.metadata.get("failures") or {}), True
    result = folder_features(paths, inception, protocol=protocol, workers=workers, progress=progress, desc=desc)
    if len(result.features) < 2:
        return None, result.failures, False
    mu, sigma = metrics.feature_statistics(result.features)
    meta = {"cache_key": key, "protocol": protocol, "n": len(result.features), "inception": inception.source,
            "failures": result.failures}
    stats = metrics.Statistics(mu=mu, sigma=sigma, features=result.features, metadata=meta)
    if cacheable and distributed.is_writer():  # every host has the same statistics: one writes them
        os.makedirs(cache_dir, exist_ok=True)
        metrics.save_statistics(path, mu, sigma, features=result.features, metadata=meta)
    return stats, result.failures, False

