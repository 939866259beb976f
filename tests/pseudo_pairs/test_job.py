"""The pseudo-pair job end to end at the `:tiny` size (random 16 px generators, tiny random segmenter).

What must hold (docs/reference.md §3.3, §3.5): the output layout and names of `generate_pair.py`; a
run killed in the middle of writing (and with a torn manifest line) and restarted with the same
command gives the bytes of an uninterrupted run; a finished output is left alone, other settings are
refused by name; 8 (fake) devices give the pairs of 1; the i2i job trains on the folder it writes.
Correctness of `seg_loss` against PyTorch is in test_parity.py.
"""
import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from scenimefy_jax import main as entry
from scenimefy_jax.pseudo_pairs import job

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config(output, **overrides):
    spec = importlib.util.spec_from_file_location("pseudo_pairs_config", os.path.join(ROOT, "configs", "pseudo_pairs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("tiny")
    config.output = str(output)
    config.progress = False
    config.update(overrides)
    return config


def _digest(folder, skip=("summary.json",)):
    """{relative path: sha256} of every file below `folder` except `skip`."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), folder)
            if rel not in skip:
                with open(os.path.join(dirpath, name), "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """The job compiles the same programs in every run here: share them through XLA's persistent cache."""
    import jax

    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    output = tmp_path_factory.mktemp("pairs_straight")
    assert entry.run_job(tiny_config(output)) == 0
    return output


def test_layout_names_and_records(straight):
    config = tiny_config(straight)
    records = [json.loads(line) for line in open(straight / "pairs.jsonl")]
    assert [r["candidate"] for r in records] == list(range(len(records)))
    accepted = [r for r in records if r["accepted"]]
    assert len(accepted) == config.num_pairs and records[-1]["accepted"]  # stops at the last needed pair
    # generate_pair.py names: the k-th accepted pair is <num_pairs - 1 - k>.png, in trainA and trainB
    assert [r["name"] for r in accepted] == [f"{config.num_pairs - 1 - k}.png" for k in range(config.num_pairs)]
    names = sorted(os.listdir(straight / "trainA"))
    assert names == sorted(os.listdir(straight / "trainB")) == sorted(r["name"] for r in accepted)
    photo = np.asarray(Image.open(straight / "trainA" / names[0]))
    assert photo.shape == (16, 16, 3) and photo.dtype == np.uint8
    assert not np.array_equal(photo, np.asarray(Image.open(straight / "trainB" / names[0])))
    # top_fraction (the :tiny selection) keeps ceil(q * batch) per full batch, among >1-class photos
    for r in records:
        assert (r["seg_classes"] == len(r["classes"])) and (r["seg_classes"] > 1 or not r["accepted"])
    summary = json.load(open(straight / "summary.json"))
    assert summary["complete"] and summary["num_pairs"] == config.num_pairs
    assert summary["candidates"] == len(records)
    assert summary["acceptance_rate"] == pytest.approx(config.num_pairs / len(records), abs=1e-5)
    z = np.load(straight / "accepted_z.npy")
    assert z.shape == (config.num_pairs, 32)
    from scenimefy_jax.pseudo_pairs.candidates import latent_of_index

    np.testing.assert_array_equal(z, latent_of_index(config.seed, np.array([r["candidate"] for r in accepted]), 32))
    for name in ("grid_accepted.png", "grid_rejected.png", "seg_loss_hist.png"):
        assert Image.open(straight / name).size[0] > 0


def test_killed_while_writing_then_restarted_equals_uninterrupted(straight, tmp_path, monkeypatch):
    output = tmp_path / "pairs"
    batch = tiny_config(output).batch_size
    first_batch = [json.loads(line) for line in open(straight / "pairs.jsonl")][:batch]
    kill_at = 2 * sum(r["accepted"] for r in first_batch) + 2  # the 2nd PNG of the second batch
    real_save = job.image_ops.save_png
    calls = {"n": 0}

    def dying_save(image, path):  # "kills" the run with one PNG of the second batch written, one not
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise KeyboardInterrupt("simulated kill")
        real_save(image, path)

    monkeypatch.setattr(job.image_ops, "save_png", dying_save)
    with pytest.raises(KeyboardInterrupt):
        entry.run_job(tiny_config(output))
    monkeypatch.setattr(job.image_ops, "save_png", real_save)
    records_before = open(output / "pairs.jsonl").read().splitlines()
    assert len(records_before) == batch  # the first batch was recorded, the second not
    assert not os.path.exists(output / "summary.json")
    with open(output / "pairs.jsonl", "a") as f:  # and a torn write at the end of the manifest
        f.write('{"candidate": 999, "seg_lo')
    assert entry.run_job(tiny_config(output)) == 0
    assert _digest(output) == _digest(straight)
    assert len(open(output / "pairs.jsonl").read().splitlines()) > len(records_before)


def test_finished_output_is_kept_and_other_settings_refused(straight, caplog):
    before = _digest(straight, skip=())
    assert entry.run_job(tiny_config(straight)) == 0
    assert _digest(straight, skip=()) == before
    with caplog.at_level(logging.ERROR):
        assert entry.run_job(tiny_config(straight, truncation=0.5, seg_cat_th=0)) == 2
    assert "truncation (was 0.7, now 0.5)" in caplog.text and "seg_cat_th" in caplog.text
    assert _digest(straight, skip=()) == before


def test_bad_options_are_named(tmp_path, caplog):
    for key, value in (("selection", "best"), ("num_pairs", 0), ("top_fraction", 1.5), ("noise", "fresh"),
                       ("batch_size", 0), ("segmenter_dtype", "int8")):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert entry.run_job(tiny_config(tmp_path / key, **{key: value})) == 2
        assert f"--config.{key}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert entry.run_job(tiny_config(tmp_path / "x", random_segmenter=False, segmenter="")) == 2
    assert "--config.segmenter is required" in caplog.text


def test_all_rejected_stops_instead_of_hanging(tmp_path, caplog):
    config = tiny_config(tmp_path / "none", selection="official", seg_loss_th=0.0, max_candidates=8)
    with caplog.at_level(logging.ERROR):
        assert entry.run_job(config) == 1
    assert "0 of 6 pairs accepted" in caplog.text and "--config.max_candidates" in caplog.text
    assert os.listdir(tmp_path / "none" / "trainA") == []
    assert json.load(open(tmp_path / "none" / "summary.json"))["complete"] is False


SCRIPT = textwrap.dedent(
    """
    import sys, jax
    assert jax.local_device_count() == 8, jax.devices()
    sys.path.insert(0, {root!r})
    from tests.pseudo_pairs.test_job import tiny_config
    from scenimefy_jax import main as entry
    assert entry.run_job(tiny_config({output!r})) == 0  # the :tiny batch of 8: one candidate per device
    print("ok")
    """
)


@pytest.mark.slow  # eight-device run of the pair job, ~25-50 s: in the slow pass, to keep the default suite under 15 minutes
def test_eight_devices_give_the_pairs_of_one(straight, tmp_path):
    one = straight
    eight = tmp_path / "eight"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(root=ROOT, output=str(eight))], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    a = [json.loads(line) for line in open(one / "pairs.jsonl")]
    b = [json.loads(line) for line in open(eight / "pairs.jsonl")]
    assert [(r["candidate"], r["accepted"], r["name"], r["classes"]) for r in a] == \
        [(r["candidate"], r["accepted"], r["name"], r["classes"]) for r in b]
    np.testing.assert_allclose([r["seg_loss"] for r in a], [r["seg_loss"] for r in b], rtol=0, atol=1e-5)
    for folder in ("trainA", "trainB"):
        for name in os.listdir(one / folder):
            diff = np.abs(np.asarray(Image.open(one / folder / name), int) - np.asarray(Image.open(eight / folder / name), int))
            assert diff.max() <= 1, (folder, name)


@pytest.mark.slow  # fine-tuning and translation steps compile for minutes on 2 cores
def test_chain_stylegan_finetune_pseudo_pairs_i2i(tmp_path):
    """The documented chain at tiny size: configs/stylegan_finetune.py:tiny exports G_s and G_t, the
    pseudo-pair job renders pairs from those exports, and configs/i2i.py trains on them (data.paired)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    finetune = tmp_path / "stylegan"
    cmd = [sys.executable, "-m", "scenimefy_jax.main", "--config=configs/stylegan_finetune.py:tiny",
           f"--config.workdir={finetune}", f"--config.compilation_cache_dir={tmp_path / 'cache'}"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    pairs = tmp_path / "pairs"
    config = tiny_config(pairs, random_generators=False, source=str(finetune / "source"),
                         target=str(finetune / "generator"))
    assert entry.run_job(config) == 0
    assert len(os.listdir(pairs / "trainA")) == config.num_pairs

    from scenimefy_jax.data import demo

    folders = demo.write_demo_dataset(tmp_path / "unpaired", n_photos=4, n_anime=4, n_pairs=0, size=16)
    spec = importlib.util.spec_from_file_location("i2i_config", os.path.join(ROOT, "configs", "i2i.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("demo")
    config.workdir = str(tmp_path / "i2i")
    config.data.unpaired = os.path.dirname(folders["photos"])
    config.data.paired = str(pairs)
    config.data.image_size = 32  # the smallest the translator takes; the 16 px pairs are resized
    config.data.num_workers = 0
    config.global_batch = 2
    config.num_steps = 2
    config.model.update(ngf=8, n_blocks=5, ndf=8, num_patches=16, netF_nc=16)
    config.log_every, config.images_every, config.checkpoint_every = 1, 2, 2
    config.grid_images = 2
    assert entry.run_job(config) == 0
    records = [json.loads(line) for line in open(tmp_path / "i2i" / "metrics.jsonl")]
    paired = [r for r in records if "G_GAN_p" in r]
    assert paired and all(np.isfinite(r["G_GAN_p"]) and np.isfinite(r["NCE_s"]) for r in paired)


WORKER = textwrap.dedent(
    """
    import sys, jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize({address!r}, num_processes=2, process_id=int(sys.argv[1]))
    assert jax.process_count() == 2 and jax.device_count() == 2
    sys.path.insert(0, {root!r})
    from tests.pseudo_pairs.test_job import tiny_config
    from scenimefy_jax import main as entry
    assert entry.run_job(tiny_config({output!r})) == 0
    print("ok")
    """
)


@pytest.mark.slow  # ~50 s: two processes compile the step side by side on 2 cores
def test_two_hosts_give_the_pairs_of_one(straight, tmp_path):
    """Two processes on 127.0.0.1 (gloo collectives), each feeding its half of every batch."""
    from tests.parallel.processes import free_port

    port = free_port()
    output = tmp_path / "two_hosts"
    script = WORKER.format(address=f"127.0.0.1:{port}", root=ROOT, output=str(output))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0 and out.strip().endswith("ok"), err[-3000:]
    a = [json.loads(line) for line in open(straight / "pairs.jsonl")]
    b = [json.loads(line) for line in open(output / "pairs.jsonl")]
    assert [(r["candidate"], r["accepted"], r["name"]) for r in a] == [(r["candidate"], r["accepted"], r["name"]) for r in b]
    np.testing.assert_allclose([r["seg_loss"] for r in a], [r["seg_loss"] for r in b], rtol=0, atol=1e-5)
    one, two = _digest(straight), _digest(output)
    assert {k for k in one if one[k] != two.get(k)} <= {"pairs.jsonl"}  # images, z, grids: the same bytes
