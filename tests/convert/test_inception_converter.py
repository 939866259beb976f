"""Converter of pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (docs/reference.md §6.1), no forward pass.

State dicts come from the PyTorch reference in tests/torch_reference/fid_inception.py (random weights),
whose keys are those of the published file. Missing, unexpected and mis-shaped keys are refused by
name; `num_batches_tracked` may be present or not; kind detection is unambiguous among all registered
converters; the file is read with weights_only; tools/convert_checkpoint.py writes a loadable model.
"""
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax import convert, model_io  # noqa: E402
from scenimefy_jax.convert import inception as convert_inception  # noqa: E402
from scenimefy_jax.convert.registry import detect_kind, get_converter, kinds  # noqa: E402
from scenimefy_jax.convert.torch_checkpoint import CheckpointMismatchError  # noqa: E402
from scenimefy_jax.models import inception  # noqa: E402
from tests.torch_reference import fid_inception as tref  # noqa: E402

FILE = "pt_inception-2015-12-05-6726825d.pth"


@pytest.fixture(scope="module")
def torch_state_dict():
    return tref.randomize_(tref.FIDInceptionV3(), seed=5).state_dict()


@pytest.fixture(scope="module")
def state_dict(torch_state_dict):
    return {k: v.numpy() for k, v in torch_state_dict.items()}


@pytest.fixture(scope="module")
def pth(torch_state_dict, tmp_path_factory):
    path = tmp_path_factory.mktemp("fid") / FILE
    torch.save(torch_state_dict, path)
    return path


def test_every_key_lands_where_the_model_reads_it(state_dict):
    assert sum(k.endswith("num_batches_tracked") for k in state_dict) == 94
    assert len(state_dict) == 94 * 6 + 2
    params = convert_inception.convert_state_dict(state_dict).params
    np.testing.assert_array_equal(
        params["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
        np.transpose(state_dict["Mixed_6b.branch7x7_2.conv.weight"], (2, 3, 1, 0)),
    )
    assert params["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"].shape == (1, 7, 128, 128)
    bn = params["Mixed_7c"]["branch3x3dbl_3b"]["bn"]
    for ours, theirs in (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"), ("var", "running_var")):
        np.testing.assert_array_equal(bn[ours], state_dict[f"Mixed_7c.branch3x3dbl_3b.bn.{theirs}"])
    np.testing.assert_array_equal(params["fc"]["kernel"], state_dict["fc.weight"].T)
    np.testing.assert_array_equal(params["fc"]["bias"], state_dict["fc.bias"])
    np.testing.assert_array_equal(params["Conv2d_1a_3x3"]["conv"]["kernel"],
                                  np.transpose(state_dict["Conv2d_1a_3x3.conv.weight"], (2, 3, 1, 0)))
    n = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(params))
    assert n == sum(int(np.prod(s)) for s in inception.param_shapes().values())  # nothing dropped but counters


def test_num_batches_tracked_is_optional(state_dict):
    without = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    a = convert_inception.convert_state_dict(without).params
    b = convert_inception.convert_state_dict(state_dict).params
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    # ... but only beside a BatchNorm that exists
    stray = dict(without, **{"Mixed_8a.branch1x1.bn.num_batches_tracked": np.zeros((), np.int64)})
    with pytest.raises(CheckpointMismatchError) as e:
        convert_inception.convert_state_dict(stray)
    assert e.value.unexpected == ["Mixed_8a.branch1x1.bn.num_batches_tracked"]


def test_missing_unexpected_and_misshaped_keys_are_named(state_dict):
    victim = "Mixed_6e.branch7x7dbl_4.bn.running_var"
    bad = {k: v for k, v in state_dict.items() if k != victim}
    with pytest.raises(CheckpointMismatchError, match=r"Mixed_6e\.branch7x7dbl_4\.bn\.running_var") as e:
        convert_inception.convert_state_dict(bad, "x.pth")
    assert e.value.missing == [victim] and not e.value.unexpected and not e.value.misshaped

    extra = dict(state_dict, **{"AuxLogits.fc.weight": np.zeros((1000, 768), np.float32)})
    with pytest.raises(CheckpointMismatchError, match=r"AuxLogits\.fc\.weight") as e:
        convert_inception.convert_state_dict(extra, "x.pth")
    assert e.value.unexpected == ["AuxLogits.fc.weight"] and not e.value.missing

    # a 7x1 kernel where the file must hold a 1x7 one (the transposed asymmetric convolution)
    key = "Mixed_6c.branch7x7_2.conv.weight"
    misshaped = dict(state_dict, **{key: np.transpose(state_dict[key], (0, 1, 3, 2))})
    named = r"Mixed_6c\.branch7x7_2\.conv\.weight is \(160, 160, 7, 1\)"
    with pytest.raises(CheckpointMismatchError, match=named) as e:
        convert_inception.convert_state_dict(misshaped, "x.pth")
    assert [k for k, _, _ in e.value.misshaped] == [key]

    torchvision_fc = dict(state_dict, **{"fc.weight": np.zeros((1000, 2048), np.float32),
                                         "fc.bias": np.zeros(1000, np.float32)})
    with pytest.raises(CheckpointMismatchError) as e:  # an ImageNet-1000 torchvision model is not FID's
        convert_inception.convert_state_dict(torchvision_fc, "x.pth")
    assert [k for k, _, _ in e.value.misshaped] == ["fc.bias", "fc.weight"]


def test_kind_detection_is_unambiguous(state_dict, pth):
    assert "fid_inception" in kinds()
    assert detect_kind(state_dict, "x") == "fid_inception"
    others = [k for k in kinds() if k != "fid_inception" and get_converter(k).matches(state_dict)]
    assert others == []
    assert convert.convert_file(pth).kind == "fid_inception"
    # ... and the Inception converter claims no other registered network's file
    from scenimefy_jax.convert import vgg as convert_vgg

    vgg_shapes = {**convert_vgg.feature_shapes(), **convert_vgg.CLASSIFIER_SHAPES}
    vgg = {k: np.zeros(s, np.float32) for k, s in vgg_shapes.items()}
    assert detect_kind(vgg, "vgg") == "vgg19"
    assert not get_converter("fid_inception").matches(vgg)
    assert not get_converter("fid_inception").matches({"Conv2d_1a_3x3.conv.weight": np.zeros(1)})


class _Evil:  # a pickle that would run code: weights_only=True must refuse it
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_arbitrary_pickles_are_never_executed(tmp_path):
    path = tmp_path / FILE
    torch.save({"Conv2d_1a_3x3.conv.weight": _Evil(), "Mixed_7c.branch_pool.conv.weight": torch.zeros(1)}, path)
    with pytest.raises(convert.CheckpointError, match="weights_only"):
        convert.convert_file(path)


def test_tool_writes_a_loadable_model_directory(pth, tmp_path, capsys):
    from tools import convert_checkpoint

    out = tmp_path / "fid_inception"
    assert convert_checkpoint.main([str(pth), str(out)]) == 0  # in-process: no second jax start-up
    assert "fid_inception, 23,885,392 parameters" in capsys.readouterr().out
    saved = model_io.load_model(out, expected_kind="fid_inception")
    assert saved.metadata["architecture"] == {"model": "FIDInceptionV3"}
    assert saved.metadata["source"]["file"] == FILE
    assert saved.metadata["source"]["sha256"] == convert.file_sha256(pth)
    direct = convert.convert_file(pth).params
    assert jax.tree_util.tree_structure(saved.params) == jax.tree_util.tree_structure(direct)
    jax.tree_util.tree_map(np.testing.assert_array_equal, saved.params, direct)
