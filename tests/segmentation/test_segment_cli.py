"""The segment job end to end on a folder with a corrupt file, against the `Segmenter` API.

A tiny random Mask2Former is saved as a converted model directory; the job runs through
`main.run_job`. What it writes is checked against an independent computation from the API's labels
(`Segmenter.labels` on the PIL-decoded photo): the label PNG is `PALETTE[labels]`, the overlay is the
alpha blend written out here, the raw PNG holds the indices, and legend.json's fractions are the label
counts. Each distinct (batch, height, width) compiles once per segmenter (~5-10 s on a laptop core),
so the folder holds just two sizes.
"""
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from configs import segment as segment_config
from scenimefy_jax import main as entry
from scenimefy_jax import model_io
from scenimefy_jax.models.mask2former.model import Mask2FormerConfig, init_params
from scenimefy_jax.segmentation import ade20k
from scenimefy_jax.segmentation.segmenter import Segmenter

TINY = Mask2FormerConfig(
    embed_dim=8, depths=(1, 1, 1, 1), swin_heads=(1, 1, 1, 1), window_size=4, feature_size=32,
    mask_feature_size=16, encoder_layers=1, encoder_feedforward_dim=32, encoder_heads=2, hidden_dim=16,
    num_queries=8, decoder_layers=1, decoder_heads=2, dim_feedforward=32,
)
VALID = {"a.png": (40, 56), "b.jpg": (40, 56), "c.png": (32, 64)}  # 40x56: not multiples of 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    params = init_params(TINY, seed=8)  # a seed whose labels vary across these images
    directory = tmp_path_factory.mktemp("m2f") / "tiny_mask2former"
    model_io.save_model(directory, kind="mask2former", params=params,
                        architecture={"model": "Mask2Former", **TINY.to_dict()})
    return str(directory)


def _write_inputs(folder):
    rng = np.random.default_rng(0)
    for name, (h, w) in VALID.items():
        coarse = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((w, h), Image.BICUBIC).save(folder / name, quality=95)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")


def _config(checkpoint, inputs, output, /, **overrides):
    cfg = segment_config.get_config()
    cfg.checkpoint, cfg.input, cfg.output, cfg.progress = checkpoint, str(inputs), str(output), False
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def test_segment_job_matches_the_api_and_keeps_outputs(checkpoint, tmp_path, caplog):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    _write_inputs(inputs)
    alpha = 0.3
    cfg = _config(checkpoint, inputs, out, batch_size=2, raw=True, overlay_alpha=alpha)
    assert entry.run_job(cfg) == 1, "a corrupt input must make the job exit non-zero"
    assert "corrupt.png" in caplog.text and "skipped" in caplog.text
    stems = ["a", "b", "c"]
    suffixes = ["_labels.png", "_overlay.png", "_legend.png", "_labels_raw.png"]
    assert sorted(os.listdir(out)) == sorted([s + x for s in stems for x in suffixes] + ["legend.json"])

    segmenter = Segmenter.from_checkpoint(checkpoint)
    photos = {name: np.asarray(Image.open(inputs / name).convert("RGB")) for name in VALID}
    pair = segmenter.labels(np.stack([photos["a.png"], photos["b.jpg"]]).astype(np.float32))
    want_labels = {"a.png": pair[0], "b.jpg": pair[1], "c.png": segmenter.labels(photos["c.png"].astype(np.float32))}
    assert min(len(np.unique(v)) for v in want_labels.values()) >= 2, "random model predicts one class; weak test"
    legend = json.loads((out / "legend.json").read_text())["images"]
    assert sorted(legend) == stems
    for name, labels in want_labels.items():
        stem = os.path.splitext(name)[0]
        assert labels.shape == VALID[name]
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{stem}_labels.png")), ade20k.PALETTE[labels])
        raw = Image.open(out / f"{stem}_labels_raw.png")
        assert raw.mode == "L"
        np.testing.assert_array_equal(np.asarray(raw), labels)
        blend = np.rint((1 - alpha) * photos[name] + alpha * ade20k.PALETTE[labels].astype(np.float64))
        got = np.asarray(Image.open(out / f"{stem}_overlay.png")).astype(int)
        assert np.abs(got - blend.astype(int)).max() <= 1  # float32 blend in the job, float64 here

        counts = np.bincount(labels.ravel(), minlength=150)
        entry_classes = legend[stem]["classes"]
        assert [c["index"] for c in entry_classes] == sorted(np.flatnonzero(counts), key=lambda c: (-counts[c], c))
        for c in entry_classes:
            assert c["name"] == ade20k.CLASS_NAMES[c["index"]]
            assert c["fraction"] == pytest.approx(counts[c["index"]] / labels.size, abs=1e-6)
        assert (legend[stem]["height"], legend[stem]["width"]) == VALID[name]
        # The legend image's first swatch shows the largest class's colour.
        swatches = np.asarray(Image.open(out / f"{stem}_legend.png"))
        top = ade20k.PALETTE[entry_classes[0]["index"]]
        assert (swatches[5:12, 5:12] == top).all(axis=-1).all()

    # A second run keeps every output, still names the corrupt file, and keeps legend.json's entries.
    before = {n: (out / n).stat().st_mtime_ns for n in os.listdir(out) if n.endswith(".png")}
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert entry.run_job(cfg) == 1
    assert "corrupt.png" in caplog.text and "3 inputs already have their outputs" in caplog.text
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before
    assert json.loads((out / "legend.json").read_text())["images"] == legend


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("checkpoint", "", "--config.checkpoint is required"),
        ("checkpoint", "/does/not/exist.pkl", "--config.checkpoint='/does/not/exist.pkl'"),
        ("checkpoint", "EMPTY_DIR", "cannot be loaded as a Mask2Former"),
        ("dtype", "float16", "--config.dtype"),
        ("batch_size", 0, "--config.batch_size"),
        ("max_side", -1, "--config.max_side"),
        ("overlay_alpha", 1.5, "--config.overlay_alpha"),
        ("input", "/no/such/*.jpg", "no image files found"),
        ("output", "", "--config.output is required"),
    ],
)
def test_bad_options_are_named(checkpoint, tmp_path, option, value, message, caplog):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    if value == "EMPTY_DIR":
        value = str(tmp_path / "empty")
        os.mkdir(value)
    cfg = _config(checkpoint, tmp_path / "a.png", tmp_path / "o", **{option: value})
    assert entry.run_job(cfg) == 2
    assert message in caplog.text
    assert not (tmp_path / "o").exists()


def test_refuses_clashing_names_and_ignores_its_own_outputs(checkpoint, tmp_path, caplog):
    for name in ("same.jpg", "same.png"):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / name)
    assert entry.run_job(_config(checkpoint, tmp_path, tmp_path / "o")) == 2
    assert "same_labels.png <-" in caplog.text

    # A folder holding only this job's outputs, segmented into itself: nothing is an input.
    folder = tmp_path / "segmented"
    folder.mkdir()
    for suffix in ("_labels.png", "_overlay.png", "_legend.png", "_labels_raw.png"):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / f"x{suffix}")
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert entry.run_job(_config(checkpoint, folder, folder)) == 2
    assert "named like this job's outputs" in caplog.text and "no image files found" in caplog.text


def test_an_interrupted_multi_host_run_is_folded_into_the_legend(checkpoint, tmp_path):
    """A run killed on several hosts leaves `legend.part-<i>.json` files (each host's finished images);
    the next run, here on one host, keeps those entries in legend.json and removes the parts."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(inputs / "a.png")
    ghost = {"input": "/elsewhere/ghost.png", "checkpoint": checkpoint, "height": 8, "width": 8,
             "classes": [{"index": 2, "name": ade20k.CLASS_NAMES[2], "fraction": 1.0}]}
    (out / "legend.json").write_text(json.dumps({"dataset": "ADE20K-150", "images": {"old": dict(ghost, width=4)}}))
    (out / "legend.part-1.json").write_text(json.dumps({"dataset": "ADE20K-150", "images": {"ghost": ghost}}))
    assert entry.run_job(_config(checkpoint, inputs, out)) == 0
    legend = json.loads((out / "legend.json").read_text())["images"]
    assert sorted(legend) == ["a", "ghost", "old"] and legend["ghost"] == ghost and legend["old"]["width"] == 4
    assert not (out / "legend.part-1.json").exists()
