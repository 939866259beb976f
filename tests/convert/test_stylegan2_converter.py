"""The rosinality StyleGAN2 converter: strict keys/shapes/buffers, detection, weights-only .pt files
with `args` (argparse.Namespace), architecture inference, and value round trip of every parameter."""
import argparse

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax.convert import CheckpointError, CheckpointMismatchError, convert_file  # noqa: E402
from scenimefy_jax.convert import stylegan2 as conv  # noqa: E402
from tests.torch_reference import stylegan2 as ref  # noqa: E402

SMALL = {4: 32, 8: 32, 16: 16, 32: 16}


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    g = ref.randomize_(ref.Generator(32, 64, 2, channels=SMALL), seed=0)
    d = ref.Discriminator(32, channels=SMALL)
    return {k: v.numpy() for k, v in g.state_dict().items()}, {k: v.numpy() for k, v in d.state_dict().items()}


def test_file_round_trip_detection_and_values(state, tmp_path):
    g, d = state
    path = tmp_path / "100.pt"
    torch.save({"g_ema": {k: torch.from_numpy(v) for k, v in g.items()},
                "d": {k: torch.from_numpy(v) for k, v in d.items()},
                "args": argparse.Namespace(size=32, latent=64, n_mlp=2), "ada_aug_p": 0.1,
                "g_optim": {"state": {}, "param_groups": []}}, path)
    out = convert_file(path)  # kind detected
    assert out.kind == "stylegan2"
    arch = out.architecture
    assert (arch["size"], arch["style_dim"], arch["n_mlp"]) == (32, 64, 2)
    assert arch["channels"] == {str(k): v for k, v in SMALL.items()}
    v = out.params["g_ema"]
    np.testing.assert_array_equal(v["params"]["style_2"]["kernel"], g["style.2.weight"].T)
    np.testing.assert_array_equal(v["params"]["convs_3"]["conv"]["kernel"],
                                  g["convs.3.conv.weight"][0].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(v["params"]["to_rgbs_1"]["bias"], g["to_rgbs.1.bias"].reshape(3))
    np.testing.assert_array_equal(v["params"]["input"]["input"], g["input.input"].transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(v["noises"]["noise_4"], g["noises.noise_4"].transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(out.params["d"]["params"]["final_linear_0"]["kernel"], d["final_linear.0.weight"].T)
    n_tensors = sum(1 for k in g if not k.endswith(".kernel") and not k.startswith("noises."))
    import jax
    assert len(jax.tree_util.tree_leaves(v["params"])) == n_tensors


def test_default_architecture_is_inferred_as_channel_multiplier_2():
    g = ref.Generator(64, 32, 1, channels=ref.default_channels(2))
    arch = conv.infer_architecture({k: v.numpy() for k, v in g.state_dict().items()}, "t")
    assert arch["channel_multiplier"] == 2 and arch["channels"] is None and arch["size"] == 64


def test_refuses_mismatches_by_name(state):
    g, _ = state
    bad = dict(g)
    del bad["convs.2.noise.weight"]
    bad["convs.2.extra"] = np.zeros(1, np.float32)
    bad["to_rgbs.0.conv.modulation.bias"] = np.zeros(5, np.float32)
    with pytest.raises(CheckpointMismatchError) as e:
        conv.convert_checkpoint({"g_ema": bad}, "x.pt")
    msg = str(e.value)
    assert "convs.2.noise.weight" in msg and "convs.2.extra" in msg and "to_rgbs.0.conv.modulation.bias" in msg
    blur = dict(g, **{"convs.0.conv.blur.kernel": g["convs.0.conv.blur.kernel"] * 2})
    with pytest.raises(CheckpointError, match="convs.0.conv.blur.kernel"):
        conv.convert_checkpoint({"g_ema": blur}, "x.pt")
    with pytest.raises(CheckpointError, match="unexpected top-level entries"):
        conv.convert_checkpoint({"g_ema": g, "mystery": {}}, "x.pt")
    with pytest.raises(CheckpointError, match="g_ema"):
        conv.convert_checkpoint({"g": g}, "x.pt")
