"""scenimefy_jax.notebook: config loading as the command line does it, device defaults, Colab inputs (with a
stand-in `google.colab` module), pictures and timing. The notebooks themselves run in tests/notebooks/."""
import json
import os
import sys
import time
import types

import jax
import numpy as np
import pytest
from PIL import Image

import scenimefy_jax
from scenimefy_jax import notebook

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    """A `google.colab` with `files.upload` returning `uploads` and `drive.mount` recording its calls."""
    state = {"uploads": {}, "mounted": []}
    files = types.SimpleNamespace(upload=lambda: dict(state["uploads"]))
    drive = types.SimpleNamespace(mount=lambda root: state["mounted"].append(root))
    colab = types.ModuleType("google.colab")
    colab.files, colab.drive = files, drive
    google = types.ModuleType("google")
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.chdir(tmp_path)
    return state


def test_in_colab_follows_the_google_colab_module(monkeypatch, fake_colab):
    assert notebook.in_colab()
    monkeypatch.delitem(sys.modules, "google.colab")
    assert not notebook.in_colab()


def test_find_checkout_beside_the_package_then_above_the_start(monkeypatch, tmp_path):
    assert notebook.find_checkout(tmp_path) == ROOT  # the editable install's folder comes first
    monkeypatch.setattr(scenimefy_jax, "__file__", str(tmp_path / "site" / "scenimefy_jax" / "__init__.py"))
    checkout = tmp_path / "clone"
    (checkout / "configs").mkdir(parents=True)
    (checkout / "configs" / "i2i.py").write_text("")
    (checkout / "notebooks").mkdir()
    assert notebook.find_checkout(checkout / "notebooks") == str(checkout)
    with pytest.raises(FileNotFoundError, match="configs/i2i.py"):
        notebook.find_checkout(tmp_path / "site")


def test_load_config_is_the_command_line_config_with_overrides():
    import importlib.util

    spec = importlib.util.spec_from_file_location("i2i_reference", os.path.join(ROOT, "configs", "i2i.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.get_config("demo")
    expected.workdir, expected.model.ngf, expected.data.demo.size = "elsewhere", 8, 32

    config = notebook.load_config("i2i", "demo", overrides={"workdir": "elsewhere", "model.ngf": 8,
                                                            "data.demo.size": 32})
    assert config.to_dict() == expected.to_dict()
    with pytest.raises(KeyError, match="model.ngff is not an option of configs/i2i.py"):
        notebook.load_config("i2i", overrides={"model.ngff": 8})
    with pytest.raises(AttributeError):
        config.not_an_option = 1  # locked, as with --config
    with pytest.raises(ValueError, match="unknown variant"):
        notebook.load_config("i2i", "nope")
    with pytest.raises(FileNotFoundError, match="no such job config"):
        notebook.load_config("no_such_job")


def test_check_exit_raises_on_a_failed_job():
    config = notebook.load_config("translate")
    notebook.check_exit(0, config)
    for status, meaning in ((1, "some inputs failed"), (2, "a bad option")):
        with pytest.raises(RuntimeError, match=f"translate job exited with status {status} \\({meaning}"):
            notebook.check_exit(status, config)


def test_run_tool_calls_main_with_the_arguments(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "echo.py").write_text(
        "import json, sys\n"
        "def main(argv):\n"
        "    json.dump(argv, open(argv[0], 'w'))\n"
        "    return int(argv[1])\n")
    out = str(tmp_path / "argv.json")
    notebook.run_tool("echo", [out, "0", "x y"], checkout=str(tmp_path))
    assert json.load(open(out)) == [out, "0", "x y"]
    with pytest.raises(RuntimeError, match="tools/echo.py .* exited with status 3"):
        notebook.run_tool("echo", [out, "3"], checkout=str(tmp_path))


def test_batch_and_dtype_follow_the_devices():
    assert [notebook.round_to_devices(b, 8) for b in (0, 1, 8, 9, 16)] == [8, 8, 8, 16, 16]
    assert notebook.round_to_devices(3) == 3 * jax.device_count()
    assert notebook.choose_batch_size(platform="cpu", devices=1) == 1
    assert notebook.choose_batch_size(platform="tpu", devices=8) == 64
    assert notebook.choose_batch_size(3, platform="gpu", devices=2) == 6
    assert [notebook.choose_dtype(p) for p in ("cpu", "gpu", "tpu")] == ["float32", "bfloat16", "bfloat16"]
    assert notebook.choose_dtype() == "float32"  # the tests run on CPU


def test_device_report_describes_the_jax_devices():
    report = notebook.device_report()
    assert report["platform"] == jax.default_backend() == "cpu"
    assert report["device_count"] == jax.device_count() and report["local_device_count"] == jax.local_device_count()
    assert report["kinds"] == sorted({d.device_kind for d in jax.devices()})
    assert len(report["memory_bytes"]) == jax.local_device_count() and report["jax"] == jax.__version__
    text = notebook.format_device_report(report)
    assert f"on cpu: {jax.device_count()} device(s)" in text and "dtype float32" in text


def test_images_per_second_separates_the_first_call():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.3 if len(calls) == 1 else 0.05)
        return np.zeros(3)

    timing = notebook.images_per_second(fn, 10, repeats=2)
    assert len(calls) == 3
    assert timing["first_call_s"] >= 0.3 and 0.05 <= timing["seconds_per_call"] < 0.25
    assert timing["images_per_s"] == pytest.approx(10 / timing["seconds_per_call"])


def test_locate_input_outside_colab(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    photo = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(photo)
    assert notebook.locate_input(str(photo), what="photos", upload_dir="u") == str(photo)
    assert notebook.locate_input(str(tmp_path / "*.png"), what="photos", upload_dir="u") == str(tmp_path / "*.png")
    with pytest.raises(FileNotFoundError, match="photos: .*missing does not exist"):
        notebook.locate_input(str(tmp_path / "missing"), what="photos", upload_dir="u")
    with pytest.raises(FileNotFoundError, match="uploads need Colab"):
        notebook.locate_input("", what="photos", upload_dir="u")


def test_locate_input_uploads_on_colab(fake_colab, tmp_path):
    fake_colab["uploads"] = {"x.png": b"\x89PNG one", "y.jpg": b"two"}
    for name, data in fake_colab["uploads"].items():  # files.upload also leaves them in the working directory
        (tmp_path / name).write_bytes(data)
    folder = notebook.locate_input("", what="photos", upload_dir=str(tmp_path / "up"))
    assert folder == str(tmp_path / "up")
    assert {n: (tmp_path / "up" / n).read_bytes() for n in os.listdir(folder)} == fake_colab["uploads"]
    assert not (tmp_path / "x.png").exists()
    fake_colab["uploads"] = {"net_G.pth": b"weights"}
    assert notebook.locate_input("", what="model", upload_dir=str(tmp_path / "m"), single_file=True) == \
        str(tmp_path / "m" / "net_G.pth")
    fake_colab["uploads"] = {}
    with pytest.raises(FileNotFoundError, match="nothing was uploaded"):
        notebook.locate_input("", what="model", upload_dir=str(tmp_path / "m"))
    assert fake_colab["mounted"] == []


def test_mount_drive_only_for_drive_paths_on_colab(fake_colab, monkeypatch):
    assert not os.path.isdir("/content/drive/MyDrive")  # not mounted on the machine running the tests
    assert not notebook.mount_drive("/content/photos")
    assert notebook.mount_drive("/content/drive/MyDrive/runs/x")
    assert fake_colab["mounted"] == ["/content/drive"]
    monkeypatch.delitem(sys.modules, "google.colab")
    assert not notebook.mount_drive("/content/drive/MyDrive/runs/x")


def test_side_by_side_and_stack_rows_place_the_images():
    a = np.full((20, 10, 3), 200, np.uint8)
    b = np.zeros((20, 30, 3), np.uint8)
    b[:, :, 2] = 255
    row = notebook.side_by_side([a, b], gap=4)
    assert row.size == (10 + 4 + 30, 20)
    pixels = np.asarray(row)
    np.testing.assert_array_equal(pixels[:, :10], a)
    np.testing.assert_array_equal(pixels[:, 14:], b)
    assert (pixels[:, 10:14] == 255).all()  # the white gap
    scaled = notebook.side_by_side([a, Image.fromarray(b)], height=40, labels=["photo", "anime"])
    assert scaled.size == (20 + 4 + 60, 40 + 14)
    column = notebook.stack_rows([row, scaled], gap=2)
    assert column.size == (84, 20 + 2 + 54)
    np.testing.assert_array_equal(np.asarray(column)[:20, :44], pixels)


def test_loss_curves_one_panel_per_present_key(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"step": s, "G": 2.0 - s / 10, "D": float("nan") if s == 2 else 0.5} for s in range(1, 6)]
    records.append({"step": 5, "eval/fid": 3.0})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert notebook.read_metrics(str(path)) == json.loads(json.dumps(records))
    image = notebook.loss_curves(str(path), ["G", "D", "absent"], columns=3, panel=(200, 100))
    assert image.size == (400, 100)  # two panels: "absent" is dropped
    blue = np.all(np.asarray(image) == (30, 90, 200), axis=-1)
    left_g, right_g = blue[:, 8:20].any(axis=1).nonzero()[0], blue[:, 180:193].any(axis=1).nonzero()[0]
    assert left_g.mean() < right_g.mean()  # G falls: its line starts high (small y) and ends low
    assert blue[:, 200:].any()  # D's finite points are drawn, the NaN skipped
    with pytest.raises(ValueError, match="none of the keys"):
        notebook.loss_curves(records, ["absent"])


def test_latest_and_image_files(tmp_path):
    for name in ("grid_00000006.png", "grid_00000012.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert notebook.latest(str(tmp_path / "grid_*.png")) == str(tmp_path / "grid_00000012.png")
    with pytest.raises(FileNotFoundError):
        notebook.latest(str(tmp_path / "none_*.png"))
    assert notebook.image_files(str(tmp_path), limit=1) == [str(tmp_path / "grid_00000006.png")]


def test_show_and_tensorboard_outside_a_kernel(capsys):
    assert notebook.show(np.zeros((4, 4, 3), np.uint8)) is None
    assert notebook.tensorboard("runs/x/tensorboard") is False
    assert "tensorboard --logdir runs/x/tensorboard" in capsys.readouterr().out
