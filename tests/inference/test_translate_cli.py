"""The translate job end to end on a folder of awkward inputs, against the official pipeline.

"Official pipeline" here is docs/reference.md §1.7 written out with PIL and PyTorch: `Image.open(...).convert("RGB")`,
base-4 bicubic resize, ToTensor + Normalize, the PyTorch reference generator, `tensor2im`. The CLI runs
the converted JAX generator; outputs must agree to within one intensity level (float32 rounding can
move a value across an integer boundary before the truncating cast).
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageOps

torch = pytest.importorskip("torch")

from scenimefy_jax import convert, model_io  # noqa: E402
from scenimefy_jax import main as entry  # noqa: E402
from tests.torch_reference import cut_networks as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def official_translate(generator, pil_rgb: Image.Image) -> np.ndarray:
    w, h = pil_rgb.size
    nh, nw = int(round(h / 4) * 4), int(round(w / 4) * 4)
    if (nh, nw) != (h, w):
        pil_rgb = pil_rgb.resize((nw, nh), Image.BICUBIC)
    x = torch.from_numpy(np.array(pil_rgb)).permute(2, 0, 1).float().div(255)
    x = (x - 0.5) / 0.5
    with torch.no_grad():
        y = generator(x[None])[0]
    y = y.clamp(-1.0, 1.0).numpy()
    return ((np.transpose(y, (1, 2, 0)) + 1) / 2.0 * 255.0).astype(np.uint8)


@pytest.fixture(scope="module")
def generator_and_checkpoint(tmp_path_factory):
    g = ref.randomize_(ref.ResnetGenerator(), seed=7).eval()
    path = tmp_path_factory.mktemp("g") / "Shinkai_net_G.pth"
    torch.save(g.state_dict(), path)
    return g, str(path)


def _write_inputs(folder):
    rng = np.random.default_rng(0)
    smooth = lambda h, w: np.asarray(  # noqa: E731  (photo-like: low-frequency content)
        Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    )
    Image.fromarray(smooth(64, 80)).save(folder / "valid.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 CCW to display
    Image.fromarray(smooth(48, 64)).save(folder / "rotated.jpg", exif=exif, quality=95)
    rgba = np.concatenate([smooth(64, 64), rng.integers(0, 256, (64, 64, 1), dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    Image.fromarray(smooth(40, 52)[..., 0]).save(folder / "gray.png")
    Image.fromarray((smooth(32, 48)[..., 1].astype(np.uint16) * 257 + 100)).save(folder / "deep16.png")
    Image.fromarray(smooth(301, 457)).save(folder / "odd_301x457.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "readme.txt").write_text("not an image; ignored by extension")


def _official_inputs(folder):
    """What each file looks like after decoding: the official `.convert("RGB")`, except where
    scenimefy_jax deliberately differs (EXIF orientation applied, 16-bit scaled, see data/images.py)."""
    out = {}
    for name in ("valid.jpg", "alpha.png", "gray.png", "odd_301x457.png"):
        out[name] = Image.open(folder / name).convert("RGB")
    out["rotated.jpg"] = ImageOps.exif_transpose(Image.open(folder / "rotated.jpg")).convert("RGB")
    deep = np.asarray(Image.open(folder / "deep16.png"), dtype=np.int64)
    out["deep16.png"] = Image.fromarray((deep >> 8).astype(np.uint8)).convert("RGB")
    return out


def test_cli_on_a_mixed_folder_matches_the_official_pipeline(generator_and_checkpoint, tmp_path):
    generator, checkpoint = generator_and_checkpoint
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write_inputs(inputs)
    out = tmp_path / "out"
    from configs import translate as translate_config

    cfg = translate_config.get_config()
    cfg.checkpoint, cfg.input, cfg.output, cfg.progress = checkpoint, str(inputs), str(out), False
    cfg.batch_size = 2
    status = entry.run_job(cfg)
    assert status == 1, "a corrupt input must make the job exit non-zero"
    written = sorted(os.listdir(out))
    assert written == sorted(["valid.png", "rotated.png", "alpha.png", "gray.png", "deep16.png", "odd_301x457.png"])

    for name, pil in _official_inputs(inputs).items():
        got = np.asarray(Image.open(out / (os.path.splitext(name)[0] + ".png")))
        want = official_translate(generator, pil)
        assert got.shape == want.shape, name
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() <= 1, f"{name}: max difference {diff.max()} intensity levels"
        assert want.std() > 5, f"{name}: reference output is flat; the test would prove little"
    assert np.asarray(Image.open(out / "rotated.png")).shape == (64, 48, 3)
    assert np.asarray(Image.open(out / "odd_301x457.png")).shape == (300, 456, 3)

    # A second run keeps what exists and still reports the corrupt file.
    before = (out / "valid.png").stat().st_mtime_ns
    assert entry.run_job(cfg) == 1
    assert (out / "valid.png").stat().st_mtime_ns == before
    cfg.overwrite = True
    cfg.input = str(inputs / "valid.jpg")
    assert entry.run_job(cfg) == 0
    assert (out / "valid.png").stat().st_mtime_ns != before


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("checkpoint", "", "--config.checkpoint is required"),
        ("checkpoint", "/does/not/exist.pth", "--config.checkpoint='/does/not/exist.pth'"),
        ("dtype", "float16", "--config.dtype"),
        ("batch_size", 0, "--config.batch_size"),
        ("alpha_background", "1,2", "--config.alpha_background"),
        ("input", "/no/such/*.jpg", "no image files found"),
    ],
)
def test_bad_options_are_named(generator_and_checkpoint, tmp_path, option, value, message, caplog):
    from configs import translate as translate_config

    (tmp_path / "a.png").write_bytes(b"")
    cfg = translate_config.get_config()
    cfg.checkpoint, cfg.input, cfg.output = generator_and_checkpoint[1], str(tmp_path / "a.png"), str(tmp_path / "o")
    setattr(cfg, option, value)
    assert entry.run_job(cfg) == 2
    assert message in caplog.text


def test_colliding_output_names_are_refused(generator_and_checkpoint, tmp_path, caplog):
    from configs import translate as translate_config

    for name in ("same.jpg", "same.png"):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / name)
    cfg = translate_config.get_config()
    cfg.checkpoint, cfg.input, cfg.output = generator_and_checkpoint[1], str(tmp_path), str(tmp_path / "o")
    assert entry.run_job(cfg) == 2
    assert "same.png <-" in caplog.text


@pytest.fixture(scope="module")
def converted_checkpoint(generator_and_checkpoint, tmp_path_factory):
    """The random generator converted once to a model directory, as tools/convert_checkpoint.py writes it."""
    converted = convert.convert_file(generator_and_checkpoint[1])
    return model_io.save_model(tmp_path_factory.mktemp("converted") / "translator", kind="translator",
                               params=converted.params, architecture=converted.architecture)


def _translate_command(*options):
    """`python -m scenimefy_jax.main --config=configs/translate.py ...` from the repository root, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "scenimefy_jax.main", "--config=configs/translate.py", *options],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=300)


def test_command_line_writes_the_readable_photos_and_names_the_corrupt_one(converted_checkpoint, tmp_path):
    inputs, out = tmp_path / "photos", tmp_path / "anime"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(inputs / "street.jpg", quality=95)
    Image.fromarray(rng.integers(0, 256, (40, 32, 3), dtype=np.uint8)).save(inputs / "park.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but the rest is garbage")
    proc = _translate_command(f"--config.checkpoint={converted_checkpoint}", f"--config.input={inputs}",
                              f"--config.output={out}", "--config.progress=False")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["park.png", "street.png"]
    assert np.asarray(Image.open(out / "street.png")).shape == (36, 44, 3)
    assert np.asarray(Image.open(out / "park.png")).shape == (40, 32, 3)
    assert str(inputs / "broken.png") in proc.stderr


def test_command_line_names_a_misspelt_option(converted_checkpoint, tmp_path):
    proc = _translate_command(f"--config.chekpoint={converted_checkpoint}", f"--config.input={tmp_path}",
                              f"--config.output={tmp_path / 'anime'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--config.chekpoint" in errors[0] and "--config.checkpoint" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "anime").exists()
