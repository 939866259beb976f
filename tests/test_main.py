"""The entry point as a user meets it: a typo, a bad value, a wrong or corrupt checkpoint is one line
naming the option or file and exit status 2 (0: done, 1: some inputs failed), never a traceback."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from scenimefy_jax import main as entry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "scenimefy_jax.main", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--config=configs/translate.py", "--config.chekpoint=x.pth"],
     "error: --config.chekpoint is not an option of configs/translate.py; did you mean --config.checkpoint?"),
    (["--config=configs/i2i.py", "--config.data.imag_size=128"],
     "error: --config.data.imag_size is not an option of configs/i2i.py; did you mean --config.data.image_size?"),
    (["--config=configs/translate.py", "--config.batch_size=abc"], "error: flag --config.batch_size=abc: "),
    (["--config=configs/i2i.py:fast"], "unknown variant 'fast' of configs/i2i.py (known: demo)"),
    (["--config=configs/nothere.py"], "error: --config=configs/nothere.py: no such config file"),
])
def test_command_line_mistakes_are_one_line_and_status_2(args, message):
    done = _main(*args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr


def _translate_config(checkpoint, tmp_path):
    from configs import translate

    config = translate.get_config()
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    config.update(checkpoint=str(checkpoint), input=str(photo), output=str(tmp_path / "out"), progress=False)
    return config


def test_translate_with_a_stylegan_checkpoint_says_what_the_file_is(tmp_path, caplog):
    from tests.test_sampling import _save_checkpoint

    path = tmp_path / "550000.pt"
    _save_checkpoint(str(path), 0)
    with caplog.at_level(logging.ERROR):
        assert entry.run_job(_translate_config(path, tmp_path)) == 2
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "--config.checkpoint=" in message and "this is a 'stylegan2' checkpoint" in message
    assert "a 'translator' checkpoint is needed" in message


def test_translate_with_a_corrupt_or_code_carrying_file_is_refused_without_unpickling(tmp_path, caplog):
    good = tmp_path / "good.pth"
    torch.save({"a": torch.zeros(3)}, good)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(good.read_bytes()[:40])

    evil = tmp_path / "evil.pth"
    torch.save({"x": torch.zeros(1), "obj": _Obj()}, evil)
    for path in (corrupt, evil):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert entry.run_job(_translate_config(path, tmp_path)) == 2
        message = " ".join(r.getMessage() for r in caplog.records)
        assert str(path) in message and "weights_only=False" not in message
    assert "never unpickled" in message


class _Obj:  # an arbitrary class: a weights-only load must refuse it
    pass


def test_sample_and_i2i_config_errors_are_status_2_through_the_entry_point(tmp_path, caplog):
    from configs import i2i

    config = i2i.get_config()
    config.update(workdir=str(tmp_path / "w"), compilation_cache="")
    config.data.unpaired = str(tmp_path)  # without data.paired
    with caplog.at_level(logging.ERROR):
        assert entry.run_job(config) == 2
    assert any("--config.data.unpaired and --config.data.paired must be set together" in r.getMessage()
               for r in caplog.records)


def test_stylegan_finetune_refuses_to_guess_the_source_iteration(tmp_path, caplog):
    from configs import stylegan_finetune
    from tests.test_sampling import _save_checkpoint

    source = tmp_path / "my_generator.pt"  # no iteration in the name: the lazy-R1 phase is unknown
    _save_checkpoint(str(source), 0)
    config = stylegan_finetune.get_config()
    config.update(source_checkpoint=str(source), workdir=str(tmp_path / "w"), compilation_cache=False)
    config.data.folder = str(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert entry.run_job(config) == 2
    assert any("'my_generator.pt' ends in no number; set --config.model.start_iter" in r.getMessage()
               for r in caplog.records)


def test_i2i_checks_the_kind_of_its_vgg_checkpoint(tmp_path, caplog):
    from configs import i2i

    from scenimefy_jax import model_io

    not_vgg = tmp_path / "not_vgg"
    model_io.save_model(not_vgg, kind="translator", params={"w": np.zeros(2, np.float32)}, architecture={})
    config = i2i.get_config("demo")
    config.update(workdir=str(tmp_path / "w"), compilation_cache="", vgg_checkpoint=str(not_vgg))
    config.model.lambda_VGG = 1.0
    config.data.num_workers = 0
    config.data.demo.update(n_photos=2, n_anime=2, n_pairs=2, size=16)
    with caplog.at_level(logging.ERROR):
        assert entry.run_job(config) == 2
    assert any("--config.vgg_checkpoint=" in r.getMessage() and "expected 'vgg19'" in r.getMessage()
               for r in caplog.records)
