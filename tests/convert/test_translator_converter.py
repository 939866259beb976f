"""The translator converter: strict key/shape/buffer checks, safe loading, and the CLI tool."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax import convert, model_io  # noqa: E402
from scenimefy_jax.convert import translator as convert_translator  # noqa: E402
from tests.torch_reference import cut_networks as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def state_dict():
    return ref.randomize_(ref.ResnetGenerator(), seed=3).state_dict()


@pytest.fixture(scope="module")
def pth(state_dict, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "latest_net_G.pth"
    torch.save(state_dict, path)
    return path


def test_expected_keys_are_the_spec_table(state_dict):
    shapes = convert_translator.expected_shapes()
    assert len(shapes) == 52
    assert {k: tuple(v.shape) for k, v in state_dict.items()} == shapes


def test_file_converts_and_detects_kind(pth, state_dict):
    converted = convert.convert_file(pth)
    assert converted.kind == "translator"
    np.testing.assert_array_equal(
        converted.params["model_12"]["conv_block_5"]["kernel"],
        state_dict["model.12.conv_block.5.weight"].numpy().transpose(2, 3, 1, 0),
    )
    assert sum(np.size(a) for a in jax.tree_util.tree_leaves(converted.params)) == 11_378_179


def test_missing_unexpected_and_misshaped_keys_are_listed(state_dict, tmp_path):
    bad = dict(state_dict)
    del bad["model.20.conv_block.5.bias"]
    bad["model.99.weight"] = torch.zeros(3)
    bad["model.4.weight"] = torch.zeros(128, 64, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(convert.CheckpointMismatchError) as info:
        convert.convert_file(path, kind="translator")
    message = str(info.value)
    assert str(path) in message
    assert "model.20.conv_block.5.bias" in info.value.missing
    assert "model.99.weight" in info.value.unexpected
    assert "model.4.weight is (128, 64, 5, 5), expected (128, 64, 3, 3)" in message


def test_tampered_blur_buffer_is_refused(state_dict, tmp_path):
    bad = dict(state_dict)
    bad["model.21.filt"] = bad["model.21.filt"] * 1.5
    path = tmp_path / "tampered.pth"
    torch.save(bad, path)
    with pytest.raises(convert.CheckpointError, match="model.21.filt"):
        convert.convert_file(path)


def test_truncated_file_is_refused_by_name(pth, tmp_path):
    data = pth.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(convert.CheckpointError, match="truncated.pth"):
        convert.convert_file(path)


def test_a_different_network_is_not_taken_for_a_translator(tmp_path):
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4), torch.nn.Conv2d(8, 1, 4))
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(convert.CheckpointError, match="not a checkpoint of any known kind"):
        convert.convert_file(path)
    with pytest.raises(convert.CheckpointMismatchError, match="missing keys"):
        convert.convert_file(path, kind="translator")


class _Evil:  # a pickle that would run code: weights_only=True must refuse it
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_arbitrary_pickles_are_never_executed(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model.1.weight": _Evil()}, path)
    with pytest.raises(convert.CheckpointError, match="weights_only"):
        convert.convert_file(path)


def test_dataparallel_prefix_is_accepted(state_dict, tmp_path):
    path = tmp_path / "dp.pth"
    torch.save({f"module.{k}": v for k, v in state_dict.items()}, path)
    assert convert.convert_file(path).kind == "translator"


def test_tool_writes_an_orbax_model_with_metadata(pth, tmp_path):
    out = tmp_path / "converted"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "convert_checkpoint.py"), str(pth), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    saved = model_io.load_model(out, expected_kind="translator")
    assert saved.metadata["source"]["file"] == "latest_net_G.pth"
    assert saved.metadata["source"]["sha256"] == convert.file_sha256(pth)
    assert saved.metadata["architecture"] == {"model": "ResnetGenerator", "ngf": 64, "n_blocks": 9, "output_nc": 3}
    direct = convert.convert_file(pth).params
    jax.tree_util.tree_map(np.testing.assert_array_equal, saved.params, direct)
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_tool_refuses_a_bad_or_missing_file_with_exit_status_2(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint at all")
    for source in (corrupt, tmp_path / "missing.pth"):
        cmd = [sys.executable, os.path.join(ROOT, "tools", "convert_checkpoint.py"), str(source), str(tmp_path / "o")]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and str(source) in lines[0], done.stderr
        assert not (tmp_path / "o").exists()
