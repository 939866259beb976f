"""The evaluate job: `python -m scenimefy_jax.main --config=configs/evaluate.py ...` (FID and KID).

Two ways to name the generated images, one for the real ones:

* `fake`: a folder (or glob) of images, measured as they are;
* `translator` + `photos`: the photos are translated in memory by the inference `Translator`
  (batched on every local device), turned into 8-bit images exactly as the translate job would save
  them, and measured; `save_images` also writes them;
* `real`: a folder (or glob), or a statistics `.npz` (`mu`, `sigma` as pytorch-fid writes them; with
  `features` as this job writes them, KID can be computed too).

The network is `inception` (pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` or its converted
directory). Features are computed in batches split over every local device, with progress bars; files
that cannot be read are named, skipped and counted in the report; the real folder's features are kept
in a cache (`cache`) keyed by its files, the protocol and the network. The results go to
`<output>/results.json` (written atomically) and a short table on the console.

Exit status: 0; 1 when files were skipped or a set has fewer than two readable images; 2 for a bad
config value (one error line naming the `--config.<option>`).
"""
from __future__ import annotations

import datetime
import os
import time

import numpy as np
from absl import logging

from scenimefy_jax.data import images as image_ops
from scenimefy_jax.data.atomic import write_json
from scenimefy_jax.data.image_files import ConfigError, find_inputs, prefetch_images
from scenimefy_jax.evaluation import features as features_lib
from scenimefy_jax.evaluation import metrics, protocols
from scenimefy_jax.parallel import distributed

RESULTS = "results.json"


# ----------------------------------------------------------------------------- options

def _is_stats_file(spec: str) -> bool:
    return spec.endswith(".npz") and os.path.isfile(spec)


def _image_paths(spec: str, option: str) -> list[str]:
    try:
        paths, ignored = find_inputs(spec)
    except ConfigError as e:
        raise ConfigError(str(e).replace("--config.input", f"--config.{option}")) from None
    for path in ignored:
        logging.warning("ignoring %s: not an image file extension (%s)", path, ", ".join(image_ops.IMAGE_EXTENSIONS))
    if not paths:
        raise ConfigError(f"--config.{option}={spec!r}: no image files found")
    return paths


def _validate(config) -> dict:
    if config.protocol not in protocols.PROTOCOLS:
        raise ConfigError(f"--config.protocol must be one of {', '.join(protocols.PROTOCOLS)}, got {config.protocol!r}")
    for option in ("dtype", "translator_dtype"):
        if config[option] not in ("float32", "bfloat16"):
            raise ConfigError(f"--config.{option} must be 'float32' or 'bfloat16', got {config[option]!r}")
    if config.batch_size < 0:
        raise ConfigError(f"--config.batch_size must be >= 0 (0: automatic), got {config.batch_size}")
    for option in ("translator_batch_size", "kid_subsets", "kid_subset_size"):
        if config[option] < 1:
            raise ConfigError(f"--config.{option} must be >= 1, got {config[option]}")
    if config.max_side < 0:
        raise ConfigError(f"--config.max_side must be >= 0 (0: off), got {config.max_side}")
    if not config.inception:
        raise ConfigError("--config.inception is required: pt_inception-2015-12-05-6726825d.pth (see docs/evaluation.md) "
                          "or a directory written by tools/convert_checkpoint.py")
    if config.inception != "random" and not os.path.exists(config.inception):
        raise ConfigError(f"--config.inception={config.inception!r}: no such file or directory")
    if not config.real:
        raise ConfigError("--config.real is required: a folder of real images or a statistics .npz")
    plan = {"real_stats": _is_stats_file(config.real)}
    if config.real.endswith(".npz") and not plan["real_stats"]:
        raise ConfigError(f"--config.real={config.real!r}: no such statistics file")
    plan["real_paths"] = None if plan["real_stats"] else _image_paths(config.real, "real")
    if config.fake and (config.translator or config.photos):
        raise ConfigError("--config.fake cannot be combined with --config.translator/--config.photos: choose one")
    if config.translator or config.photos:
        if not (config.translator and config.photos):
            raise ConfigError("--config.translator and --config.photos go together (translate the photos, then measure)")
        if config.translator != "random" and not os.path.exists(config.translator):
            raise ConfigError(f"--config.translator={config.translator!r}: no such file or directory")
        plan["fake_paths"] = _image_paths(config.photos, "photos")
        plan["mode"] = "translator"
    elif config.fake:
        plan["fake_paths"] = _image_paths(config.fake, "fake")
        plan["mode"] = "folders"
    elif config.save_stats:
        plan["mode"] = "stats_only"
        if plan["real_stats"]:
            raise ConfigError("--config.save_stats needs --config.real to be a folder of images, not a statistics file")
    else:
        raise ConfigError("nothing to measure: give --config.fake=DIR, or --config.translator=CKPT with "
                          "--config.photos=DIR (or only --config.save_stats=FILE.npz to store the real statistics)")
    if plan["mode"] != "stats_only" and not config.output:
        raise ConfigError("--config.output is required: the folder that receives results.json")
    if config.save_stats and not config.save_stats.endswith(".npz"):
        raise ConfigError(f"--config.save_stats={config.save_stats!r} must end in .npz")
    return plan


def _cache_dir(config) -> str | None:
    if not config.cache:
        return None
    if config.cache == "auto":
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(base, "scenimefy_jax", "fid")
    return config.cache


def _load_inception(config) -> features_lib.InceptionFeatures:
    from scenimefy_jax.convert.torch_checkpoint import CheckpointError

    kwargs = {"dtype": config.dtype, "batch_size": config.batch_size or features_lib.default_batch_size()}
    if config.inception == "random":
        logging.warning("--config.inception=random: random weights; the FID and KID below mean nothing")
        return features_lib.InceptionFeatures.random(0, **kwargs)
    try:
        return features_lib.InceptionFeatures.from_checkpoint(config.inception, **kwargs)
    except (CheckpointError, ValueError, OSError) as e:
        raise ConfigError(f"--config.inception={config.inception!r}: cannot be loaded as the FID Inception: {e}") from e


def _load_translator(config):
    from scenimefy_jax.convert.torch_checkpoint import CheckpointError
    from scenimefy_jax.inference.translator import Translator

    kwargs = {"dtype": config.translator_dtype, "batch_size": config.translator_batch_size,
              "max_side": config.max_side or None}
    if config.translator == "random":
        logging.warning("--config.translator=random: a random translator (demo)")
        return Translator(random_translator_params(), {"ngf": 8, "n_blocks": 2}, **kwargs)
    try:
        return Translator.from_checkpoint(config.translator, **kwargs)
    except (CheckpointError, ValueError, OSError) as e:
        raise ConfigError(f"--config.translator={config.translator!r}: cannot be loaded as a translator: {e}") from e


def random_translator_params(seed: int = 0):
    """A small random `ResnetGenerator` (ngf 8, 2 blocks) for the demo: weights N(0, 0.02^2) (the scale of
    CUT's initialisation), biases 0. Drawn with numpy from the shapes: compiling `init` takes ~10 s on CPU."""
    import jax

    from scenimefy_jax.models.translator import ResnetGenerator

    shapes = jax.eval_shape(ResnetGenerator(ngf=8, n_blocks=2).init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32))["params"]
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map_with_path(
        lambda path, s: (np.zeros(s.shape, np.float32) if str(path[-1].key) == "bias"
                         else (0.02 * rng.standard_normal(s.shape)).astype(np.float32)), shapes)


def _sha256(path: str) -> str | None:
    """SHA-256 of a checkpoint file; for a converted / exported model directory, the one its metadata
    records for the file it came from (None when it records none, e.g. a training export)."""
    from scenimefy_jax import model_io
    from scenimefy_jax.convert import checkpoint_sha256

    try:
        if model_io.is_saved_model(path):
            return (model_io.load_model(path).metadata.get("source") or {}).get("sha256")
        return checkpoint_sha256(path)
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- the two sets

def _real_statistics(config, plan, inception) -> tuple[metrics.Statistics | None, dict, dict]:
    """(statistics, failures, description) of the real set."""
    if plan["real_stats"]:
        try:
            stats = metrics.load_statistics(config.real)
        except ValueError as e:
            raise ConfigError(f"--config.real={config.real!r}: {e}") from e
        meta = stats.metadata or {}
        if meta.get("protocol") and meta["protocol"] != config.protocol:
            raise ConfigError(f"--config.real={config.real!r} was measured with protocol {meta['protocol']!r}, "
                              f"this run uses {config.protocol!r}; numbers of different protocols are not comparable")
        if not meta.get("protocol"):
            logging.warning("%s does not record its protocol (as pytorch-fid's files); it is assumed to be %r",
                            config.real, config.protocol)
        if stats.mu.shape != (features_lib.NUM_FEATURES,):
            raise ConfigError(f"--config.real={config.real!r}: statistics of {stats.mu.shape[0]} dims, "
                              f"the FID Inception gives {features_lib.NUM_FEATURES}")
        n = meta.get("n", len(stats.features) if stats.features is not None else None)
        return stats, {}, {"stats_file": os.path.abspath(config.real), "sha256": _sha256(config.real), "n": n}
    stats, failures, cached = features_lib.cached_folder_statistics(
        plan["real_paths"], inception, protocol=config.protocol, cache_dir=_cache_dir(config),
        workers=config.decode_workers, progress=config.progress, desc="real")
    return stats, failures, {"folder": os.path.abspath(config.real), "files": len(plan["real_paths"]),
                             "from_cache": cached}


def _fake_features(config, plan, inception) -> tuple[np.ndarray, dict, dict]:
    """(features, failures, description) of the generated set."""
    if plan["mode"] == "folders":
        result = features_lib.folder_features(plan["fake_paths"], inception, protocol=config.protocol,
                                              workers=config.decode_workers, progress=config.progress, desc="fake")
        return result.features, result.failures, {"folder": os.path.abspath(config.fake), "files": len(plan["fake_paths"])}

    from tqdm import tqdm

    translator = _load_translator(config)
    failures: dict[str, str] = {}
    # On several hosts each translates and measures every process_count-th photo (docs/multihost.md).
    share = distributed.process_share(plan["fake_paths"])
    if config.save_images:
        os.makedirs(config.save_images, exist_ok=True)
    bar = tqdm(total=len(share), unit="img", desc="translate+features", disable=not config.progress)
    decoded = prefetch_images(share, None, config.decode_workers, failures)

    def prepared():
        for path, image in decoded:
            try:
                yield path, translator.preprocess(image, path)
            except ValueError as e:
                failures[path] = str(e)

    def translated():
        for path, anime in translator.translate_many(prepared()):
            if config.save_images:
                out = os.path.join(config.save_images, os.path.splitext(os.path.basename(path))[0] + ".png")
                try:
                    image_ops.save_png(anime, out)
                except OSError as e:
                    logging.error("cannot write %s: %s", out, e)
            bar.update(1)
            yield path, anime

    keys, feats = features_lib.features_of_images(translated(), inception, config.protocol)
    bar.update(len(share) - bar.n)
    bar.close()
    gathered = features_lib.gather_in_order(plan["fake_paths"], keys, feats, failures)
    source = {"translator": os.path.abspath(config.translator) if config.translator != "random" else "random",
              "translator_sha256": None if config.translator == "random" else _sha256(config.translator),
              "photos": os.path.abspath(config.photos), "files": len(plan["fake_paths"]),
              "translator_dtype": config.translator_dtype}
    return gathered.features, gathered.failures, source


# ----------------------------------------------------------------------------- the job

def _table(results: dict) -> str:
    kid = ("n/a" if results["kid_mean"] is None
           else f"{results['kid_mean']:.6f} +- {results['kid_std']:.6f} (x1000: {1000 * results['kid_mean']:.3f})")
    rows = [("FID", f"{results['fid']:.4f}"), ("KID", kid),
            ("n fake / real", f"{results['n_fake']} / {results['n_real']}"), ("protocol", results["protocol"]),
            ("inception", (results["inception"]["sha256"] or results["inception"]["path"] or "?")[:16])]
    if results["skipped"]["count"]:
        rows.append(("skipped files", str(results["skipped"]["count"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _demo_data(config) -> None:
    """`:demo` writes procedural photos and anime renderings (once) where the config points."""
    from scenimefy_jax.data import demo

    if distributed.is_writer():  # process 0 writes them; the other hosts wait at the barrier
        for folder, offset, anime in ((config.photos, 0, False), (config.real, 1_000_000, True)):
            os.makedirs(folder, exist_ok=True)
            for i in range(config.demo_images):
                path = os.path.join(folder, f"{'anime' if anime else 'photo'}_{i:04d}.png")
                if not os.path.exists(path):
                    photo, labels = demo.render_scene(0, offset + i, 64)
                    image_ops.save_png(demo.anime_render(photo, labels) if anime else photo, path)
    distributed.barrier("evaluate_demo_data")


def _log_skipped(failures: dict[str, str]) -> None:
    for path, reason in failures.items():
        logging.error("skipped %s", reason if reason.startswith(path) else f"{path}: {reason}")


def run(config) -> int:
    start = time.perf_counter()
    try:
        if "demo_images" in config:
            _demo_data(config)
        plan = _validate(config)
        inception = _load_inception(config)
        real, real_failures, real_source = _real_statistics(config, plan, inception)
    except ConfigError as e:
        logging.error("%s", e)
        return 2
    _log_skipped(real_failures)
    if real is None:
        logging.error("--config.real=%r: fewer than two readable images; FID needs at least two", config.real)
        return 1
    if config.save_stats and distributed.is_writer():
        os.makedirs(os.path.dirname(os.path.abspath(config.save_stats)), exist_ok=True)
        written = metrics.save_statistics(
            config.save_stats, real.mu, real.sigma, features=real.features,
            metadata={k: v for k, v in (real.metadata or {}).items() if k != "cache_key"})
        logging.info("statistics of %d real images (%s protocol) written to %s",
                     len(real.features), config.protocol, written)
    if plan["mode"] == "stats_only":
        return 1 if real_failures else 0

    try:
        fake, fake_failures, fake_source = _fake_features(config, plan, inception)
    except ConfigError as e:
        logging.error("%s", e)
        return 2
    _log_skipped(fake_failures)
    if len(fake) < 2:
        logging.error("fewer than two readable generated images; FID needs at least two")
        return 1

    if real.features is not None:  # exact low-rank route when n < 2048 (metrics.fid_from_features)
        fid = metrics.fid_from_features(fake, real.features)
    else:
        mu, sigma = metrics.feature_statistics(fake)
        fid = metrics.frechet_distance(mu, sigma, real.mu, real.sigma)
    kid = None
    if real.features is not None:
        kid = metrics.kernel_inception_distance(fake, real.features, num_subsets=config.kid_subsets,
                                                subset_size=config.kid_subset_size, seed=config.kid_seed)
    else:
        logging.warning("%s holds no features (only mu and sigma): KID needs them and is not reported", config.real)
    n_real = len(real.features) if real.features is not None else real_source.get("n")
    skipped = {**fake_failures, **real_failures}
    from scenimefy_jax import __version__

    results = {
        "fid": float(fid),
        "kid_mean": None if kid is None else float(kid.mean),
        "kid_std": None if kid is None else float(kid.std),
        "kid_subsets": config.kid_subsets,
        "kid_subset_size": None if kid is None else int(kid.subset_size),
        "kid_seed": config.kid_seed,
        "n_fake": int(len(fake)),
        "n_real": None if n_real is None else int(n_real),
        "protocol": config.protocol,
        "dtype": config.dtype,
        "inception": inception.source,
        "fake": fake_source,
        "real": real_source,
        "skipped": {"count": len(skipped), "files": skipped},
        "seconds": round(time.perf_counter() - start, 2),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "scenimefy_jax_version": __version__,
    }
    if distributed.is_writer():  # every host holds the same numbers (features gathered from all)
        os.makedirs(config.output, exist_ok=True)
        out = os.path.join(config.output, RESULTS)
        write_json(out, results)
        print(_table(results), flush=True)
        logging.info("results written to %s", out)
    return 1 if skipped else 0
