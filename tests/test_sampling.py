"""The sample job end to end: a random small rosinality checkpoint saved with torch.save is rendered
through configs/sample.py and compared with the PyTorch reference from the same z and fixed noise
(every pixel within one intensity level), directly from the .pt and from a converted model directory.
"""
import argparse
import logging
import os
import re

import jax
import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from configs import sample as sample_config  # noqa: E402
from scenimefy_jax import main as entry  # noqa: E402
from scenimefy_jax import model_io, sampling  # noqa: E402
from scenimefy_jax.convert import convert_file  # noqa: E402
from tests.torch_reference import stylegan2 as ref  # noqa: E402

SMALL = {4: 32, 8: 32, 16: 16, 32: 16}
D = 64


def _save_checkpoint(path, seed):
    torch.manual_seed(seed)
    g = ref.randomize_(ref.Generator(32, D, 2, channels=SMALL), seed=seed).eval()
    disc = ref.Discriminator(32, channels=SMALL)
    torch.save({"g": g.state_dict(), "g_ema": g.state_dict(), "d": disc.state_dict(),
                "args": argparse.Namespace(size=32, latent=D), "ada_aug_p": 0.0}, path)
    return g


def _reference(g, z, w_avg, truncation):
    with torch.no_grad():
        w = g.style(torch.from_numpy(z))
        img = g([w], input_is_latent=True, truncation=truncation, truncation_latent=w_avg, randomize_noise=False)[0]
    return sampling.to_uint8(img.permute(0, 2, 3, 1).numpy())


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    g1 = _save_checkpoint(str(d / "src.pt"), 1)
    g2 = _save_checkpoint(str(d / "tgt.pt"), 2)
    return d, g1, g2


def _config(**kw):
    config = sample_config.get_config()
    config.progress = False
    config.truncation_mean = 256
    config.batch_size = 2
    config.update(kw)
    return config


def test_pair_rendering_matches_pytorch(checkpoints, tmp_path):
    d, g1, g2 = checkpoints
    config = _config(checkpoint=str(d / "src.pt"), checkpoint2=str(d / "tgt.pt"), seeds="3-5",
                     output=str(tmp_path / "out"))
    assert entry.run_job(config) == 0
    z = np.stack([sampling.z_from_seed(s, D) for s in (3, 4, 5)])
    z_avg = np.array(jax.random.normal(jax.random.key(0), (256, D)))
    with torch.no_grad():
        w_avg = g1.style(torch.from_numpy(z_avg)).mean(0, keepdim=True)
    want_s = _reference(g1, z, w_avg, 0.7)
    with torch.no_grad():  # target from the SOURCE mapping and w_avg (generate_pair.py)
        w = g1.style(torch.from_numpy(z))
        img_t = g2([w], input_is_latent=True, truncation=0.7, truncation_latent=w_avg, randomize_noise=False)[0]
    want_t = sampling.to_uint8(img_t.permute(0, 2, 3, 1).numpy())
    for i in range(3):
        got = np.asarray(Image.open(tmp_path / "out" / f"{i}.png"))
        assert got.shape == (32, 64, 3)
        assert np.abs(got[:, :32].astype(int) - want_s[i]).max() <= 1
        assert np.abs(got[:, 32:].astype(int) - want_t[i]).max() <= 1
    assert os.path.isfile(tmp_path / "out" / "grid.png")


def test_latents_file_and_converted_directory(checkpoints, tmp_path):
    d, g1, _ = checkpoints
    converted = convert_file(d / "src.pt")
    assert converted.kind == "stylegan2" and sorted(converted.params) == ["d", "g", "g_ema"]
    model_dir = model_io.save_model(tmp_path / "model", kind=converted.kind, params=converted.params,
                                    architecture=converted.architecture)
    z = np.random.default_rng(0).standard_normal((3, D)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    config = _config(checkpoint=model_dir, latents=str(tmp_path / "z.npy"), truncation=1.0, output=str(tmp_path / "o"))
    assert sampling.run(config) == 0
    want = _reference(g1, z, None, 1.0)
    for i in range(3):
        got = np.asarray(Image.open(tmp_path / "o" / f"{i}.png")).astype(int)
        assert np.abs(got - want[i]).max() <= 1


def test_random_noise_differs_and_errors_name_the_option(checkpoints, tmp_path, caplog):
    d, _, _ = checkpoints
    outs = []
    for seed in (0, 1):
        config = _config(checkpoint=str(d / "src.pt"), seeds="0", noise="random", noise_seed=seed,
                         output=str(tmp_path / f"r{seed}"), grid=False)
        sampling.run(config)
        outs.append(np.asarray(Image.open(tmp_path / f"r{seed}" / "0.png")).astype(int))
    assert np.abs(outs[0] - outs[1]).max() > 0
    np.save(tmp_path / "bad.npy", np.zeros((2, 7), np.float32))
    np.save(tmp_path / "wplus.npy", np.zeros((2, 8, D), np.float32))  # w+ codes, not z's: never flattened
    cases = [
        (_config(checkpoint=str(tmp_path / "missing.pt"), output=str(tmp_path / "x")), "--config.checkpoint"),
        (_config(checkpoint=str(d / "src.pt"), noise="none", output=str(tmp_path / "x")), "--config.noise"),
        (_config(checkpoint=str(d / "src.pt"), seeds="3-1", output=str(tmp_path / "x")), "--config.seeds"),
        (_config(checkpoint=str(d / "src.pt"), latents=str(tmp_path / "bad.npy"), output=str(tmp_path / "x")),
         "--config.latents"),
        (_config(checkpoint=str(d / "src.pt"), latents=str(tmp_path / "wplus.npy"), output=str(tmp_path / "x")),
         rf"expected z's of shape \[N, {D}\], got \(2, 8, {D}\)"),
    ]
    for config, message in cases:  # one error line naming the option, exit status 2 (no exception out of run)
        with caplog.at_level(logging.ERROR):
            caplog.clear()
            assert sampling.run(config) == 2
        assert any(re.search(message, r.getMessage()) for r in caplog.records), message
    assert not (tmp_path / "x").exists()


def test_to_uint8_is_the_official_writer():
    x = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0, 0.998], np.float32)
    want = torch.from_numpy(x).clamp(-1, 1).add(1).div(2).mul(255).add(0.5).clamp(0, 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(sampling.to_uint8(x), want)
