"""The evaluate job end to end against pytorch-fid's pipeline written out in the test.

The reference: PIL `.convert("RGB")`, `x / 255`, `torch.nn.functional.interpolate(299, bilinear,
align_corners=False)`, `2x - 1`, the PyTorch FID Inception of tests/torch_reference (random weights
and BatchNorm statistics, saved as a `.pth` the job converts), and §6.1's FID (`reference_fid`).
The job must give that FID (relative 1e-4: the features agree to ~1e-5 of their
scale and FID of these small sets is a few units) and the KID of the metric function on those features.
"""
import importlib.util
import json
import logging
import os

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image

from scenimefy_jax import main as entry
from scenimefy_jax.evaluation import metrics
from tests.torch_reference import fid_inception as ref

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RTOL = 1e-4


def base_config(**overrides):
    spec = importlib.util.spec_from_file_location("evaluate_config", os.path.join(ROOT, "configs", "evaluate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.update(batch_size=8, progress=False, decode_workers=1)
    config.update(overrides)
    return config


def _scene(rng, h, w):
    """A smooth random image (gradients + blobs), so features vary between images."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        a, b, p = rng.uniform(-1, 1, 3)
        img[..., c] = 0.5 + 0.3 * np.sin(6 * (a * xx + b * yy) + 6 * p) + 0.1 * rng.standard_normal((h, w))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _write_images(folder, names_and_sizes, seed):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, (h, w) in names_and_sizes:
        Image.fromarray(_scene(rng, h, w)).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    model = ref.randomize_(ref.FIDInceptionV3(), seed=3)
    weights = root / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(model.state_dict(), weights)
    # Mixed sizes: each image is resized to 299 on its own, as pytorch-fid's per-image transform does.
    fake = _write_images(root / "fake", [(f"f{i}.png", (40, 48) if i % 2 else (64, 64)) for i in range(6)], seed=1)
    (fake / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    real = _write_images(root / "real", [(f"r{i}.jpg", (32, 32)) for i in range(7)], seed=2)
    return {"root": root, "model": model, "weights": str(weights), "fake": fake, "real": real}


def torch_features(model, folder) -> np.ndarray:
    feats = []
    for name in sorted(os.listdir(folder)):
        try:
            image = Image.open(folder / name).convert("RGB")
        except OSError:
            continue
        x = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float().div(255)[None]
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        with torch.no_grad():
            feats.append(model(2 * x - 1).numpy()[0])
    return np.stack(feats).astype(np.float64)


def reference_fid(f1, f2) -> float:
    """FID of docs/reference.md §6.1 with `tr sqrtm(s1 s2)` taken as `tr sqrtm(s1^1/2 s2 s1^1/2)` through two
    symmetric eigendecompositions: independent of both routes of `metrics` (eigenvalues of the product,
    SVD of the cross matrix). pytorch-fid's `scipy.linalg.sqrtm` takes 20 s per call at 2048 dims
    on this CPU; tests/evaluation/test_metrics.py compares with that recipe."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = scipy.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = scipy.linalg.eigvalsh(root1 @ s2 @ root1)
    trace_covmean = np.sqrt(np.clip(inner, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_covmean)


@pytest.fixture(scope="module")
def reference(setup):
    return {"fake": torch_features(setup["model"], setup["fake"]), "real": torch_features(setup["model"], setup["real"])}


@pytest.fixture(scope="module")
def folders_run(setup):
    out = setup["root"] / "out_folders"
    config = base_config(inception=setup["weights"], fake=str(setup["fake"]), real=str(setup["real"]),
                         output=str(out), cache=str(setup["root"] / "cache"))
    status = entry.run_job(config)
    with open(out / "results.json") as f:
        return status, json.load(f)


def test_two_folders_give_pytorch_fids_number_and_skip_the_corrupt_file(setup, reference, folders_run):
    status, results = folders_run
    assert status == 1  # one file skipped
    assert results["skipped"]["count"] == 1 and list(results["skipped"]["files"]) == [str(setup["fake"] / "broken.png")]
    assert (results["n_fake"], results["n_real"]) == (6, 7)
    expected = reference_fid(reference["fake"], reference["real"])
    assert results["fid"] == pytest.approx(expected, rel=RTOL)
    kid = metrics.kernel_inception_distance(reference["fake"], reference["real"], subset_size=1000)
    assert results["kid_subset_size"] == 6  # shrunk to the smaller set
    assert results["kid_mean"] == pytest.approx(kid.mean, rel=1e-3, abs=1e-6)
    assert results["protocol"] == "pytorch_fid"
    sha = sha256_of(setup["weights"])
    assert results["inception"]["sha256"] == sha and results["real"]["from_cache"] is False


def sha256_of(path):
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_statistics_file_round_trips_with_pytorch_fid_names_and_the_cache_is_used(setup, reference, folders_run):
    _, first = folders_run
    stats_path = setup["root"] / "real_stats.npz"
    config = base_config(inception=setup["weights"], real=str(setup["real"]), save_stats=str(stats_path),
                         cache=str(setup["root"] / "cache"))
    assert entry.run_job(config) == 0
    with np.load(stats_path, allow_pickle=False) as f:  # what pytorch-fid's loader does
        np.testing.assert_allclose(f["mu"], reference["real"].mean(0), rtol=1e-4, atol=1e-4 * np.abs(f["mu"]).max())
        assert f["sigma"].shape == (2048, 2048)

    out = setup["root"] / "out_stats"
    config = base_config(inception=setup["weights"], fake=str(setup["fake"]), real=str(stats_path), output=str(out))
    assert entry.run_job(config) == 1
    with open(out / "results.json") as f:
        from_stats = json.load(f)
    assert from_stats["fid"] == pytest.approx(first["fid"], rel=1e-9)
    assert from_stats["kid_mean"] == pytest.approx(first["kid_mean"], rel=1e-9)  # features stored too

    # A file as pytorch-fid writes it (mu and sigma only): FID, but no KID.
    bare = setup["root"] / "pytorch_fid_stats.npz"
    np.savez(bare, mu=reference["real"].mean(0), sigma=np.cov(reference["real"], rowvar=False))
    config = base_config(inception=setup["weights"], fake=str(setup["fake"]), real=str(bare),
                         output=str(setup["root"] / "out_bare"))
    assert entry.run_job(config) == 1
    with open(setup["root"] / "out_bare" / "results.json") as f:
        bare_results = json.load(f)
    assert bare_results["fid"] == pytest.approx(first["fid"], rel=RTOL) and bare_results["kid_mean"] is None

    # The reference folder's features came from the cache the first run wrote.
    config = base_config(inception=setup["weights"], fake=str(setup["fake"]), real=str(setup["real"]),
                         output=str(setup["root"] / "out_cached"), cache=str(setup["root"] / "cache"))
    assert entry.run_job(config) == 1
    with open(setup["root"] / "out_cached" / "results.json") as f:
        cached = json.load(f)
    assert cached["real"]["from_cache"] is True and cached["fid"] == first["fid"]


def test_translator_mode_equals_translating_then_measuring_the_saved_images(setup, tmp_path):
    from tests.torch_reference import cut_networks

    from scenimefy_jax import model_io
    from scenimefy_jax.convert import translator as convert_translator

    # A small random translator in the converted-directory form (the .pth converter takes the released size).
    torch_g = cut_networks.randomize_(cut_networks.ResnetGenerator(ngf=8, n_blocks=2), seed=5)
    state = {k: v.numpy() for k, v in torch_g.state_dict().items()}
    converted = convert_translator.convert_state_dict(state, ngf=8, n_blocks=2)
    translator = tmp_path / "translator"
    model_io.save_model(translator, kind="translator", params=converted.params, architecture=converted.architecture,
                        source={"sha256": "0" * 64})
    photos = _write_images(tmp_path / "photos", [(f"p{i}.png", (32, 36)) for i in range(5)], seed=4)
    saved = tmp_path / "saved"
    config = base_config(inception=setup["weights"], translator=str(translator), photos=str(photos),
                         real=str(setup["real"]), output=str(tmp_path / "a"), save_images=str(saved), cache="")
    assert entry.run_job(config) == 0
    assert sorted(os.listdir(saved)) == [f"p{i}.png" for i in range(5)]
    config = base_config(inception=setup["weights"], fake=str(saved), real=str(setup["real"]),
                         output=str(tmp_path / "b"), cache="")
    assert entry.run_job(config) == 0
    results = [json.load(open(tmp_path / d / "results.json")) for d in ("a", "b")]
    assert results[0]["fid"] == pytest.approx(results[1]["fid"], rel=1e-9)
    assert results[0]["fake"]["translator_sha256"] == "0" * 64  # as its metadata records


@pytest.mark.parametrize("overrides, message", [
    ({"inception": ""}, "--config.inception is required"),
    ({"protocol": "tf"}, "--config.protocol must be one of"),
    ({"translator": "x.pth"}, "--config.fake cannot be combined"),
    ({"real": "missing.npz"}, "--config.real='missing.npz': no such statistics file"),
    ({"fake": "", "photos": "somewhere"}, "--config.translator and --config.photos go together"),
    ({"kid_subset_size": 0}, "--config.kid_subset_size must be >= 1"),
])
def test_bad_options_are_one_line_errors_with_status_2(setup, tmp_path, caplog, overrides, message):
    config = base_config(inception=setup["weights"], fake=str(setup["fake"]), real=str(setup["real"]),
                         output=str(tmp_path))
    config.update(overrides)
    with caplog.at_level(logging.ERROR):
        assert entry.run_job(config) == 2
    assert any(message in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_a_statistics_file_of_another_protocol_is_refused(setup, tmp_path, caplog):
    stats = tmp_path / "clean.npz"
    feats = np.random.default_rng(0).standard_normal((4, 2048)).astype(np.float32)
    metrics.save_statistics(stats, *metrics.feature_statistics(feats), metadata={"protocol": "clean"})
    config = base_config(inception=setup["weights"], fake=str(setup["fake"]), real=str(stats), output=str(tmp_path))
    with caplog.at_level(logging.ERROR):
        assert entry.run_job(config) == 2
    assert any("protocol 'clean'" in r.getMessage() for r in caplog.records)


def test_all_unreadable_images_end_with_status_1_and_no_results(setup, tmp_path, caplog):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"b{i}.png").write_bytes(b"junk")
    config = base_config(inception=setup["weights"], fake=str(bad), real=str(setup["real"]), output=str(tmp_path / "o"),
                         cache="")
    with caplog.at_level(logging.ERROR):
        assert entry.run_job(config) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("b0.png" in m for m in messages) and any("fewer than two readable" in m for m in messages)
    assert not (tmp_path / "o" / "results.json").exists()


def test_demo_variant_runs_with_random_networks(tmp_path):
    spec = importlib.util.spec_from_file_location("evaluate_config", os.path.join(ROOT, "configs", "evaluate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("demo")
    config.update(photos=str(tmp_path / "data/photos"), real=str(tmp_path / "data/anime"), output=str(tmp_path),
                  demo_images=6, batch_size=8, progress=False)
    assert entry.run_job(config) == 0
    results = json.load(open(tmp_path / "results.json"))
    assert results["n_fake"] == results["n_real"] == 6 and np.isfinite(results["fid"]) and results["fid"] > 0
    assert results["inception"]["path"] == "random:0"
