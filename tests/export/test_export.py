"""Translator export (scenimefy_jax/export, tools/export_translator.py): the ONNX and jax.export files
against the JAX `Translator` at several batch sizes and image sizes, both files loaded in a process where
`scenimefy_jax` cannot be imported, the orbax model directory from a `.pth`, and the CLI's exit statuses."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("jax2onnx")

from scenimefy_jax import export, model_io  # noqa: E402
from scenimefy_jax.evaluation.job import random_translator_params  # noqa: E402
from scenimefy_jax.export import translator as export_lib  # noqa: E402
from scenimefy_jax.inference import Translator  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARCH = {"model": "ResnetGenerator", "ngf": 8, "n_blocks": 2, "output_nc": 3}
# Outputs lie in [-1, 1]; the exported graphs compute the same float32 arithmetic as the JAX forward, in
# another order (onnxruntime's convolutions, the constants folded by XLA): measured up to 2.2e-6.
TOLERANCE = 1e-5
# Two image sizes (neither square, one with H > W) times two batch sizes.
SHAPES = [(batch, h, w) for batch in (1, 3) for (h, w) in ((16, 24), (32, 20))]


def _inputs(batch, h, w, seed=0):
    return np.random.default_rng(seed + 7 * batch + h).uniform(-1, 1, (batch, h, w, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "translator"
    model_io.save_model(path, kind="translator", params=random_translator_params(seed=3), architecture=ARCH,
                        source={"file": "random", "sha256": "0" * 64})
    return str(path)


@pytest.fixture(scope="module")
def translator(model_dir):
    return Translator.from_checkpoint(model_dir)


@pytest.fixture(scope="module")
def references(translator):
    refs = {shape: np.asarray(translator.translate_array(_inputs(*shape))) for shape in SHAPES}
    assert all(np.std(y) > 0.1 for y in refs.values())  # a comparison of near-constant images proves nothing
    return refs


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    return {fmt: export.export_translator(model_dir, folder / f"translator.{fmt}", format=fmt)
            for fmt in ("onnx", "jax_export")}


def _deserialize(path):
    with open(path, "rb") as f:
        return jax.export.deserialize(bytearray(f.read()))


def _onnx_dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_jax_export_is_symbolic_in_batch_and_size_and_serves_three_platforms(exported):
    loaded = _deserialize(exported["jax_export"])
    assert str(loaded.in_avals[0]) == "float32[b,4*h,4*w,3]"
    assert str(loaded.out_avals[0]) == "float32[b,4*h,4*w,3]"
    assert loaded.platforms == ("cpu", "cuda", "tpu")


def test_jax_export_matches_the_translator(exported, references):
    loaded = _deserialize(exported["jax_export"])
    for shape, ref in references.items():
        got = np.asarray(loaded.call(_inputs(*shape)))
        assert got.shape == ref.shape
        assert np.max(np.abs(got - ref)) <= TOLERANCE, shape
    with pytest.raises(ValueError, match="Division had remainder"):  # 18 is not a multiple of 4
        loaded.call(np.zeros((1, 18, 24, 3), np.float32))
    # Sides below 8: jax does not check the `h >= 2` constraint at call time, but the module's shapes
    # cannot be refined (the reflect padding at a quarter of the size has one row), so it is refused too.
    with pytest.raises(ValueError, match="refining shapes"):
        loaded.call(np.zeros((1, 4, 24, 3), np.float32))


def test_onnx_has_dynamic_batch_height_width_and_matches_the_translator(exported, references):
    model = onnx.load(exported["onnx"])
    onnx.checker.check_model(model)
    (photo,), (anime,) = model.graph.input, model.graph.output
    assert (photo.name, anime.name) == ("photo", "anime")
    assert _onnx_dims(photo) == ["batch", "height", "width", 3]
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["architecture"]) == ARCH
    assert json.loads(props["source"]) == {"file": "random", "sha256": "0" * 64}  # no local path inside
    session = ort.InferenceSession(exported["onnx"], providers=["CPUExecutionProvider"])
    for shape, ref in references.items():
        (got,) = session.run(["anime"], {"photo": _inputs(*shape)})
        assert got.shape == ref.shape
        assert np.max(np.abs(got - ref)) <= TOLERANCE, shape


def test_fixed_batch_and_size(model_dir, translator, tmp_path):
    path = export.export_translator(model_dir, tmp_path / "fixed.onnx", format="onnx", batch=3, size=(32, 20))
    assert _onnx_dims(onnx.load(path).graph.input[0]) == [3, 32, 20, 3]
    x = _inputs(3, 32, 20)
    (got,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"photo": x})
    assert np.max(np.abs(got - np.asarray(translator.translate_array(x)))) <= TOLERANCE
    path = export.export_translator(model_dir, tmp_path / "fixed.jax", format="jax_export", size=(32, 20),
                                    platforms=("cpu",))
    loaded = _deserialize(path)
    assert str(loaded.in_avals[0]) == "float32[b,32,20,3]" and loaded.platforms == ("cpu",)
    with pytest.raises(export.ExportError, match="multiples of 4"):
        export.export_translator(model_dir, tmp_path / "bad.onnx", format="onnx", size=(30, 20))


# Run in a fresh interpreter: with sys.modules["scenimefy_jax"] = None every import of the package fails,
# so the files must stand on onnxruntime and jax alone.
_WITHOUT_PACKAGE = r"""
import sys
sys.modules["scenimefy_jax"] = None
import numpy as np
import jax
import onnxruntime
try:
    import scenimefy_jax
    raise SystemExit("scenimefy_jax could be imported")
except ImportError:
    pass
onnx_path, jax_path, folder = sys.argv[1:]
x = np.load(f"{folder}/x.npy")
session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
np.save(f"{folder}/onnx.npy", session.run(["anime"], {"photo": x})[0])
with open(jax_path, "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
np.save(f"{folder}/jax.npy", np.asarray(exported.call(x)))
print("loaded:", sorted(m for m in sys.modules if m.startswith("scenimefy") and sys.modules[m] is not None))
"""


def test_exported_files_run_where_the_package_cannot_be_imported(exported, references, tmp_path):
    shape = (3, 32, 20)
    np.save(tmp_path / "x.npy", _inputs(*shape))
    done = subprocess.run([sys.executable, "-c", _WITHOUT_PACKAGE, exported["onnx"], exported["jax_export"],
                           str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded: []" in done.stdout
    for name in ("onnx", "jax"):
        got = np.load(tmp_path / f"{name}.npy")
        assert np.max(np.abs(got - references[shape])) <= TOLERANCE, name


def _documented_examples():
    """The ```python blocks of docs/export.md's "Using the files without this package", in order."""
    with open(os.path.join(ROOT, "docs", "export.md")) as f:
        section = f.read().split("## Using the files without this package", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_documented_examples_reproduce_the_translator(exported, translator, tmp_path):
    processing, with_onnxruntime, with_jax = _documented_examples()
    rng = np.random.default_rng(4)  # a smooth photo-like image, 62x45: rounds to 64x44 (62/4 = 15.5 -> 16)
    photo = Image.fromarray(rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)).resize((62, 45), Image.BICUBIC)
    photo.save(tmp_path / "photo.jpg", quality=95)
    shutil.copy(exported["onnx"], tmp_path / "shinkai.onnx")
    shutil.copy(exported["jax_export"], tmp_path / "shinkai.jax")
    script = "\n".join([
        'import os, sys\nsys.modules["scenimefy_jax"] = None',
        processing, with_onnxruntime, 'os.replace("anime.png", "anime_onnx.png")',
        with_jax, 'os.replace("anime.png", "anime_jax.png")'])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with Image.open(tmp_path / "photo.jpg") as decoded:
        expected = translator(np.asarray(decoded.convert("RGB")))
    assert expected.shape == (44, 64, 3)
    for name in ("onnx", "jax"):
        with Image.open(tmp_path / f"anime_{name}.png") as png:
            got = np.asarray(png)
        assert got.shape == expected.shape
        # The truncating uint8 cast can move a value across one level when the floats differ in the last bits.
        assert np.max(np.abs(got.astype(int) - expected.astype(int))) <= 1, name


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(model_dir, tmp_path, monkeypatch):
    out = tmp_path / "translator.jax"
    out.write_bytes(b"previous export")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_lib.os, "fsync", broken_fsync)
    with pytest.raises(export.ExportError, match="No space left"):
        export.export_translator(model_dir, out, format="jax_export", overwrite=True, platforms=("cpu",))
    assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["translator.jax"]


# -- the CLI ---------------------------------------------------------------------------------------

def _cli():
    path = os.path.join(ROOT, "tools", "export_translator.py")
    spec = importlib.util.spec_from_file_location("export_translator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _run_cli(capsys, *argv):
    try:
        status = _cli()([str(a) for a in argv])
    except SystemExit as e:  # argparse refusing an option
        status = e.code
    return status, capsys.readouterr().err.strip()


def test_cli_exit_statuses(model_dir, tmp_path, capsys):
    other = model_io.save_model(tmp_path / "patchgan", kind="patchgan", params={"w": np.zeros(2, np.float32)},
                                architecture={})
    status, err = _run_cli(capsys, other, tmp_path / "a.onnx", "--format", "onnx")
    assert status == 2 and len(err.splitlines()) == 1
    assert other in err and "'patchgan' model, expected 'translator'" in err

    status, err = _run_cli(capsys, tmp_path / "missing_net_G.pth", tmp_path / "b")
    assert status == 2 and len(err.splitlines()) == 1 and "missing_net_G.pth: no such checkpoint file" in err

    existing = tmp_path / "existing.jax"
    existing.write_bytes(b"keep me")
    status, err = _run_cli(capsys, model_dir, existing, "--format", "jax_export")
    assert status == 2 and "already exists" in err and str(existing) in err
    assert existing.read_bytes() == b"keep me"
    status, _ = _run_cli(capsys, model_dir, existing, "--format", "jax_export", "--overwrite", "--platforms", "cpu")
    assert status == 0
    assert _deserialize(existing).platforms == ("cpu",)

    status, err = _run_cli(capsys, model_dir, tmp_path / "c", "--format", "tflite")
    assert status == 2 and len(err.splitlines()) == 1 and "--format" in err and "tflite" in err
    for fmt, *bad in (("onnx", "--size", "30x20"), ("onnx", "--size", "big"), ("onnx", "--platforms", "cpu"),
                      ("jax_export", "--platforms", "cpu,gpu"), ("orbax", "--batch", "2")):
        status, err = _run_cli(capsys, model_dir, tmp_path / "d", "--format", fmt, *bad)
        assert status == 2 and len(err.splitlines()) == 1 and err.split()[1].startswith(bad[0]), (bad, err)
    assert not os.path.exists(tmp_path / "c") and not os.path.exists(tmp_path / "d")


# -- official .pth checkpoints (need torch) --------------------------------------------------------

@pytest.fixture(scope="module")
def torch_refs():
    torch = pytest.importorskip("torch")
    from tests.torch_reference import cut_networks, cut_training

    return torch, cut_networks, cut_training


def test_cli_exports_a_pth_as_a_model_directory(torch_refs, tmp_path):
    from scenimefy_jax import convert

    torch, ref, _ = torch_refs
    pth = tmp_path / "Shinkai_net_G.pth"
    torch.save(ref.randomize_(ref.ResnetGenerator(), seed=5).state_dict(), pth)
    out = tmp_path / "models" / "shinkai"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "export_translator.py"), str(pth), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = model_io.load_model(out, expected_kind="translator")
    assert saved.metadata["architecture"] == {"model": "ResnetGenerator", "ngf": 64, "n_blocks": 9, "output_nc": 3}
    assert saved.metadata["source"]["sha256"] == convert.file_sha256(pth)
    jax.tree_util.tree_map(np.testing.assert_array_equal, saved.params, convert.convert_file(pth).params)
    # The directory is itself a checkpoint: exporting it again keeps the provenance of the .pth.
    assert export.load_translator(out).source == saved.metadata["source"]


def test_cli_refuses_wrong_kind_and_corrupt_pth_files(torch_refs, tmp_path, capsys):
    torch, _, training_ref = torch_refs
    discriminator = tmp_path / "latest_net_D.pth"
    torch.save(training_ref.NLayerDiscriminator(3).state_dict(), discriminator)
    status, err = _run_cli(capsys, discriminator, tmp_path / "a.onnx", "--format", "onnx")
    assert status == 2 and len(err.splitlines()) == 1
    assert str(discriminator) in err and "'patchgan' checkpoint" in err and "'translator' checkpoint is needed" in err

    corrupt = tmp_path / "corrupt_net_G.pth"
    corrupt.write_bytes(b"PK\x03\x04 not a checkpoint at all")
    status, err = _run_cli(capsys, corrupt, tmp_path / "b.jax", "--format", "jax_export")
    assert status == 2 and len(err.splitlines()) == 1 and str(corrupt) in err
