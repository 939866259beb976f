"""Multi-host start-up and the exchanges of `scenimefy_jax/parallel/distributed.py`, with real processes.

Two processes on 127.0.0.1 (gloo CPU collectives) stand in for two hosts; the same calls run on a TPU pod
slice or a GPU cluster (docs/multihost.md)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from scenimefy_jax import model_io
from scenimefy_jax.evaluation.job import random_translator_params
from scenimefy_jax.parallel import distributed
from tests.parallel.processes import ROOT, _env, free_port, run_main

WORKER = textwrap.dedent("""
    import sys
    from scenimefy_jax.parallel import distributed
    i = int(sys.argv[1])
    assert distributed.initialize("explicit", coordinator_address=sys.argv[2], num_processes=2, process_id=i)
    import jax, numpy as np
    assert jax.process_count() == 2 and jax.local_device_count() == 2 and jax.device_count() == 4
    assert distributed.process_share(list(range(7))) == list(range(7))[i::2]
    rows = distributed.gather_rows(np.full((i + 1, 3), i, np.float32))  # 1 row from process 0, 2 from 1
    assert rows.tolist() == [[0, 0, 0], [1, 1, 1], [1, 1, 1]], rows
    values = distributed.gather_json({"process": i, "names": ["x"] * (3 * i)})
    assert values == [{"process": 0, "names": []}, {"process": 1, "names": ["x", "x", "x"]}], values
    distributed.barrier("done")
    print("ok", distributed.is_writer())
""")


def test_two_processes_join_share_and_gather():
    address = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), address], cwd=ROOT, env=_env(2),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert [o.split()[-1] for o, _ in outs] == ["True", "False"]  # process 0 writes shared files


def test_single_host_is_left_alone(monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    assert distributed.initialize("auto") is False  # no cluster detected here: one host, nothing started
    assert distributed.initialize("off") is False


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="sometimes"), "distributed.mode='sometimes'"),
    (dict(mode="explicit", num_processes=2, process_id=0), "--config.distributed.coordinator_address"),
    (dict(mode="explicit", coordinator_address="h:1", num_processes=2, process_id=2), "must be below"),
    (dict(mode="explicit", coordinator_address="h:1", num_processes=2, process_id=0, local_device_ids="0;1"),
     "local_device_ids"),
])
def test_bad_options_are_named(kwargs, message):
    mode = kwargs.pop("mode")
    with pytest.raises(distributed.DistributedConfigError, match=message.replace("(", r"\(")):
        distributed.initialize(mode, **kwargs)


def test_bad_option_through_main_is_one_line_and_status_2(tmp_path):
    (finished,) = run_main(["--config=configs/translate.py", "--config.distributed.mode=explicit",
                            "--config.checkpoint=x", "--config.input=x", f"--config.output={tmp_path}"], timeout=120)
    assert finished.returncode == 2
    assert "--config.distributed.coordinator_address" in finished.stderr and "Traceback" not in finished.stderr


def _photos(folder, n):
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")


def test_translate_splits_a_folder_across_processes(tmp_path):
    """Two hosts x 2 devices translate one folder: every output written once, by exactly one process,
    equal to a one-process run; the corrupt file is reported and both exit with status 1."""
    checkpoint = model_io.save_model(tmp_path / "translator", kind="translator", params=random_translator_params(1),
                                     architecture={"model": "ResnetGenerator", "ngf": 8, "n_blocks": 2, "output_nc": 3},
                                     source={"test": "random"})
    _photos(tmp_path / "photos", 5)
    common = ["--config=configs/translate.py", f"--config.checkpoint={checkpoint}", f"--config.input={tmp_path / 'photos'}",
              "--config.progress=False"]
    two = run_main(common + [f"--config.output={tmp_path / 'two'}"], processes=2, devices=2)
    (one,) = run_main(common + [f"--config.output={tmp_path / 'one'}"], devices=2)
    assert [f.returncode for f in two] == [1, 1] and one.returncode == 1, two[0].stderr[-3000:]
    shares = []
    for p, finished in enumerate(two):
        line = next(l for l in finished.stderr.splitlines() if f"process {p}: translated" in l)
        shares.append(int(line.split("translated ")[1].split()[0]))
    assert sorted(shares) == [2, 3]  # 6 inputs interleaved: p0 gets p0, p2, p4 (p4 or broken fails) ...
    assert "on 2 processes" in two[0].stderr and "5 image(s)" in two[0].stderr
    assert any("broken.png" in f.stderr for f in two)
    names = sorted(os.listdir(tmp_path / "two"))
    assert names == sorted(os.listdir(tmp_path / "one")) == [f"p{i}.png" for i in range(5)]
    for name in names:
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "two" / name)),
                                      np.asarray(Image.open(tmp_path / "one" / name)))


def test_segment_splits_a_folder_across_processes(tmp_path):
    """Two hosts segment alternate photos (a tiny random Mask2Former): every output written once and
    equal to a one-process run, one legend.json with every image (the part files merged and gone), the
    corrupt photo reported, exit status 1 on both."""
    import json

    from tests.segmentation.test_segment_cli import TINY
    from scenimefy_jax.models.mask2former.model import init_params

    checkpoint = model_io.save_model(tmp_path / "m2f", kind="mask2former", params=init_params(TINY, seed=8),
                                     architecture={"model": "Mask2Former", **TINY.to_dict()})
    _photos(tmp_path / "photos", 5)
    common = ["--config=configs/segment.py", f"--config.checkpoint={checkpoint}", f"--config.input={tmp_path / 'photos'}",
              "--config.progress=False", "--config.batch_size=2"]
    # 2 devices per host: a batch split over a host's own devices (jit refuses a numpy batch with that
    # sharding once several processes run).
    two = run_main(common + [f"--config.output={tmp_path / 'two'}"], processes=2, devices=2)
    (one,) = run_main(common + [f"--config.output={tmp_path / 'one'}"], devices=2)
    assert [f.returncode for f in two] == [1, 1] and one.returncode == 1, (two[0].stderr + two[1].stderr)[-4000:]
    assert any("broken.png" in f.stderr for f in two)
    assert "segmented 5 image(s)" in two[0].stderr and "on 2 processes" in two[0].stderr
    names = sorted(os.listdir(tmp_path / "two"))
    assert names == sorted(os.listdir(tmp_path / "one"))
    assert names == sorted([f"p{i}{s}" for i in range(5) for s in ("_labels.png", "_overlay.png", "_legend.png")]
                           + ["legend.json"])
    for name in (n for n in names if n.endswith(".png")):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "two" / name)),
                                      np.asarray(Image.open(tmp_path / "one" / name)), err_msg=name)
    assert json.load(open(tmp_path / "two" / "legend.json")) == json.load(open(tmp_path / "one" / "legend.json"))


def test_sample_splits_its_batches_across_processes(tmp_path):
    """Two hosts render alternate batches of one seed list: every image written once, all equal to a
    one-process run, and one grid (written by process 0) equal to the one-process grid."""
    from tests.test_sampling import _save_checkpoint

    _save_checkpoint(str(tmp_path / "g.pt"), 1)
    common = ["--config=configs/sample.py", f"--config.checkpoint={tmp_path / 'g.pt'}", "--config.seeds=0-6",
              "--config.batch_size=2", "--config.truncation=1.0", "--config.progress=False", "--config.grid_columns=4"]
    two = run_main(common + [f"--config.output={tmp_path / 'two'}"], processes=2, devices=1)
    (one,) = run_main(common + [f"--config.output={tmp_path / 'one'}"], devices=1)
    assert [f.returncode for f in two] == [0, 0] and one.returncode == 0, (two[0].stderr + two[1].stderr)[-4000:]
    names = sorted(os.listdir(tmp_path / "one"))
    assert names == sorted(os.listdir(tmp_path / "two")) == sorted([f"{i}.png" for i in range(7)] + ["grid.png"])
    for name in names:
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "two" / name)),
                                      np.asarray(Image.open(tmp_path / "one" / name)), err_msg=name)
    assert "wrote 7 images" in two[0].stderr and "(2 processes)" in two[0].stderr
    assert "wrote 7 images" not in two[1].stderr


DEMO_WORKER = textwrap.dedent("""
    import os, sys
    from scenimefy_jax.parallel import distributed
    i = int(sys.argv[1])
    assert distributed.initialize("explicit", coordinator_address=sys.argv[2], num_processes=2, process_id=i)
    from scenimefy_jax.data import demo
    if i == 1:  # process 1 must not write a file: it waits for process 0's complete set
        def refuse(*args, **kwargs):
            raise AssertionError("process 1 rendered a demo scene")
        demo.render_scene = refuse
    folders = demo.write_demo_dataset(sys.argv[3], n_photos=5, n_anime=3, n_pairs=2, size=16)
    counts = [len(os.listdir(folders[k])) for k in ("photos", "anime", "pair_photos", "pair_anime")]
    assert counts == [5, 3, 2, 2], counts  # complete when it returns, on every process
    print("ok")
""")


def test_demo_data_is_written_once_and_complete_on_every_host(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([sys.executable, "-c", DEMO_WORKER, str(i), address, str(tmp_path / "demo")], cwd=ROOT,
                              env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.split()[-1] == "ok", err[-3000:]


def test_evaluate_splits_its_images_across_processes(tmp_path):
    """Two hosts translate and measure alternate photos and real images (random networks, :demo); the
    gathered features give the numbers of a one-process run, one results.json, and the corrupt photo
    is reported by both with exit status 1."""
    import json

    def run(name, processes):
        data = tmp_path / name / "data"
        (data / "photos").mkdir(parents=True)
        (data / "photos" / "broken.png").write_bytes(b"not a png")
        args = ["--config=configs/evaluate.py:demo", f"--config.photos={data / 'photos'}",
                f"--config.real={data / 'anime'}", f"--config.output={tmp_path / name}", "--config.demo_images=7",
                "--config.kid_subset_size=4", "--config.kid_subsets=10", "--config.progress=False"]
        finished = run_main(args, processes=processes, devices=1)
        assert [f.returncode for f in finished] == [1] * processes, finished[0].stderr[-3000:]
        return finished, json.load(open(tmp_path / name / "results.json"))

    two, split = run("two", 2)
    _, single = run("one", 1)
    assert split["n_fake"] == single["n_fake"] == 7 and split["n_real"] == single["n_real"] == 7
    for key in ("fid", "kid_mean", "kid_std"):  # the same features, in the same order (KID's subsets)
        assert abs(split[key] - single[key]) <= 1e-6 * abs(single[key]) + 1e-9, (key, split[key], single[key])
    assert [os.path.basename(p) for p in split["skipped"]["files"]] == ["broken.png"]
    assert "results written" in two[0].stderr and "results written" not in two[1].stderr
