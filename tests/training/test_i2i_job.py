"""The translation job end to end on the demo data at a tiny size: outputs, export, exact resume."""
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from scenimefy_jax import main as entry
from scenimefy_jax.training import i2i, i2i_step

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 12  # 4 epochs of 3 steps (6 demo photos at global batch 2)


def tiny_config(workdir, cache):
    import importlib.util

    spec = importlib.util.spec_from_file_location("i2i_config", os.path.join(ROOT, "configs", "i2i.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("demo")
    config.workdir = str(workdir)
    config.compilation_cache = str(cache)  # shared by the runs below: the step compiles once
    config.global_batch = 2
    config.data.image_size = 32
    config.data.num_workers = 0
    config.data.demo.update(n_photos=6, n_anime=4, n_pairs=4, size=32)
    config.model.update(ngf=8, n_blocks=5, ndf=8, num_patches=16, netF_nc=16)
    config.n_epochs, config.n_epochs_decay = 2, 2
    config.log_every, config.images_every, config.checkpoint_every = 3, 6, 4
    config.grid_images = 2
    return config


def _restore_state(workdir, step):
    with ocp.PyTreeCheckpointer() as ckptr:
        return ckptr.restore(os.path.join(workdir, "checkpoints", str(step), "state"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The session's compilation cache (tests/conftest.py), so the tiny step compiles once per session
    (tests/evaluation/test_during_training.py trains the same step)."""
    before = jax.config.jax_compilation_cache_dir
    yield before or tmp_path_factory.mktemp("xla_cache")
    jax.config.update("jax_compilation_cache_dir", before)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, cache):
    workdir = tmp_path_factory.mktemp("i2i_straight")
    config = tiny_config(workdir, cache)
    assert entry.run_job(config) == 0
    return workdir, config


def test_demo_job_leaves_checkpoint_grids_metrics_export_and_sample(straight):
    workdir, config = straight
    assert sorted(os.listdir(workdir / "demo_data")) == ["demo_manifest.json", "pair_s2a", "unpaired_s2a"]
    assert sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()) == [4, 8, 12]
    assert sorted(os.listdir(workdir / "images")) == [f"grid_x_Gx_y_xp_Gxp_yp_{s:08d}.png" for s in (6, 12)]
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    losses = [r for r in records if "G" in r]
    assert [r["step"] for r in losses] == [3, 6, 9, 12]
    for r in losses:
        for key in ("D", "D_p", "G", "G_GAN", "G_GAN_p", "HDCE", "HDCE_Y", "SRC", "NCE_s", "images_per_sec"):
            assert np.isfinite(r[key]), (r["step"], key)
    # Appendix A schedules per epoch (N = 4 here): lr 1, 1, 2/3, 1/3; gamma 50 - 40 e / 4.
    by_step = {r["step"]: r for r in losses}
    assert by_step[3]["schedule/epoch"] == 1 and by_step[12]["schedule/epoch"] == 4
    assert by_step[3]["schedule/hdce_gamma"] == 40.0 and by_step[12]["schedule/hdce_gamma"] == 10.0
    assert by_step[6]["schedule/lr_scale"] == 1.0 and by_step[9]["schedule/lr_scale"] == pytest.approx(2 / 3)
    assert by_step[12]["schedule/lr_scale"] == pytest.approx(1 / 3)
    assert all(r["schedule/lambda_pair"] == 1.0 for r in losses)  # official formula, N multiple of 4
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tensorboard"))
    assert os.path.getsize(workdir / "sample.png") > 0

    # The export is what Translator loads, and it is the trained G of the last checkpoint.
    from scenimefy_jax.inference.translator import Translator

    translator = Translator.from_checkpoint(str(workdir / "translator"))
    assert translator.architecture == {"ngf": 8, "n_blocks": 5, "output_nc": 3}
    final_g = _restore_state(workdir, STEPS)["train"]["params"]["G"]
    for a, b in zip(jax.tree_util.tree_leaves(translator.params), jax.tree_util.tree_leaves(final_g)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    out = translator.translate_array(x)
    generator = i2i_step.build_networks(i2i.hparams_from_config(config)).G
    # Same weights, same network; only XLA's fusion of two separately compiled programs differs.
    np.testing.assert_allclose(np.asarray(out), np.asarray(generator.apply({"params": final_g}, x)), rtol=0, atol=1e-6)


def test_stop_and_resume_is_bit_exact(straight, tmp_path, cache):
    straight_dir, _ = straight
    config = tiny_config(tmp_path, cache)
    config.num_steps = STEPS // 2  # the first run stops half way (checkpoint at its last step)...
    assert entry.run_job(config) == 0
    config = tiny_config(tmp_path, cache)  # ...the same command again resumes and finishes
    assert entry.run_job(config) == 0
    a, b = _restore_state(straight_dir, STEPS), _restore_state(tmp_path, STEPS)
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb) > 50
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # Same data order: the loss curve after the resume equals the uninterrupted one, value for value.
    def losses(d):
        return [(r["step"], r["G"], r["D"]) for r in map(json.loads, open(d / "metrics.jsonl")) if "G" in r]
    assert losses(tmp_path) == losses(straight_dir)
