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


def _trained_adam(module, seed, steps=3):
    """A torch Adam that took `steps` real steps on random gradients (the last parameter skips the last
    step, so step counts differ as they do for FreezeG's frozen layers)."""
    gen = torch.Generator().manual_seed(seed)
    params = list(module.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
    for i in range(steps):
        for j, p in enumerate(params):
            p.grad = None if (i == steps - 1 and j == len(params) - 1) else torch.randn(p.shape, generator=gen)
        opt.step()
    return opt


def test_adam_states_convert_by_parameter_identity(tmp_path):
    """g_optim/d_optim: every parameter's moments land on its own Flax leaf in the Flax layout. The
    expected values are looked up by parameter object (`opt.state[p]`), independent of the
    converter's index -> key order."""
    import jax

    torch.manual_seed(1)
    g = ref.randomize_(ref.Generator(32, 64, 2, channels=SMALL), seed=0)
    d = ref.randomize_(ref.Discriminator(32, channels=SMALL), seed=1)
    opts = {"g_optim": _trained_adam(g, 2), "d_optim": _trained_adam(d, 3)}
    path = tmp_path / "lhq-300.pt"
    torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict(),
                "g_optim": opts["g_optim"].state_dict(), "d_optim": opts["d_optim"].state_dict(),
                "args": argparse.Namespace(size=32)}, path)
    out = convert_file(path)
    assert out.architecture["networks"] == ["d", "g", "g_ema"]
    assert out.architecture["optimizers"]["g_optim"] == {"lr": 1e-3, "betas": [0.0, 0.99], "eps": 1e-8,
                                                         "weight_decay": 0.0}
    for name, module in (("g_optim", g), ("d_optim", d)):
        conv_state = out.params[name]
        net_params = out.params[name[0]]["params"]
        assert jax.tree_util.tree_structure(conv_state["exp_avg"]) == jax.tree_util.tree_structure(net_params)
        flat = {tuple(k.key for k in p): v for p, v in jax.tree_util.tree_flatten_with_path(conv_state["exp_avg"])[0]}
        named = dict(module.named_parameters())
        assert len(flat) == len(named)
        last = list(named)[-1]
        for path_, value in flat.items():
            key = conv.torch_key(path_)
            st = opts[name].state[named[key]]
            np.testing.assert_array_equal(value, conv.to_flax(path_, st["exp_avg"].numpy()), err_msg=key)
            sq = conv_state["exp_avg_sq"]
            for part in path_:
                sq = sq[part]
            np.testing.assert_array_equal(sq, conv.to_flax(path_, st["exp_avg_sq"].numpy()), err_msg=key)
            step = conv_state["step"]
            for part in path_:
                step = step[part]
            assert int(step) == (2 if key == last else 3), key


def test_adam_states_that_do_not_belong_are_refused(tmp_path):
    torch.manual_seed(1)
    g = ref.randomize_(ref.Generator(32, 64, 2, channels=SMALL), seed=0)
    sd = {k: v.numpy() for k, v in g.state_dict().items()}
    opt_sd = _trained_adam(g, 2, steps=1).state_dict()
    opt = {"state": {i: {k: v.numpy() for k, v in s.items()} for i, s in opt_sd["state"].items()},
           "param_groups": opt_sd["param_groups"]}
    model = conv.generator_from_architecture(conv.infer_architecture(sd, "t"))
    convert = lambda o: conv.convert_adam_state(o, sd, model, source="x.pt", name="g_optim")  # noqa: E731
    convert(opt)  # the untouched state converts

    short = {**opt, "param_groups": [{**opt["param_groups"][0], "params": opt["param_groups"][0]["params"][:-1]}]}
    with pytest.raises(CheckpointError, match="steps .* parameters but the network 'g'"):
        convert(short)
    swapped = {**opt, "state": dict(opt["state"])}
    swapped["state"][0], swapped["state"][1] = opt["state"][1], opt["state"][0]  # style.1.weight <-> style.1.bias
    with pytest.raises(CheckpointMismatchError, match=r"(?s)g_optim.exp_avg.*wrong shapes"):
        convert(swapped)
    with pytest.raises(CheckpointError, match="AMSGrad"):
        convert({**opt, "param_groups": [{**opt["param_groups"][0], "amsgrad": True}]})
    with pytest.raises(CheckpointError, match="not a torch optimiser state dict"):
        convert({"exp_avg": 1})
    no_step = {**opt, "state": {**opt["state"], 3: {"exp_avg": opt["state"][3]["exp_avg"]}}}
    with pytest.raises(CheckpointError, match="state of parameter 3"):
        convert(no_step)
