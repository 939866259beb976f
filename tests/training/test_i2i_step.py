"""One JAX `train_step` vs one official training iteration in PyTorch (docs/reference.md §2.5-2.8).

From identical weights (He-scaled random, converted with the official-checkpoint converters), inputs
and patch positions, both sides run D, then D_p, then G + F + F_s with Adam, at epoch 12 (lr
multiplier 9/11, hDCE gamma 26; paper-mode lambda_pair 0.649). Architecture as the release except
ngf = ndf = 8 and nc = 32 (32x32 images), so it runs in seconds.

What is compared, for every parameter of all five networks:
* the gradients, read from Adam's first moment (`mu = (1 - beta1) g` after one step): within 2e-4 of
  the tensor's largest gradient plus 1e-5 of the network's (float32 through ~40 layers and their
  transposes; the second term covers gradients that are exactly zero in exact arithmetic);
* the updated parameters, within 2.5e-7 (two float32 ulps at |p| ~ 1) + 1e-5 * lr. Adam's first step moves each entry by
  `lr * g / (|g| + eps)`, i.e. about `±lr` whatever |g|, so it amplifies float noise in gradients that
  are zero in exact arithmetic (biases of convolutions followed by InstanceNorm). Those entries, where
  |g| is below 1e-3 of the tensor's largest gradient, are only required to move by at most lr; the
  test asserts that they are a small minority of all parameters.
"""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax.convert import patchgan as convert_patchgan  # noqa: E402
from scenimefy_jax.convert import projection as convert_projection  # noqa: E402
from scenimefy_jax.convert import translator as convert_translator  # noqa: E402
from scenimefy_jax.convert import vgg as convert_vgg  # noqa: E402
from scenimefy_jax.models.vgg import CONV4_4, trim_params  # noqa: E402
from scenimefy_jax.training import i2i_step as S  # noqa: E402
from tests.torch_reference import cut_networks as ref  # noqa: E402
from tests.torch_reference import cut_training as tref  # noqa: E402

EPOCH = 12
SIZE = 32


def _sd(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _torch_nets(hp):
    ch = (3, 2 * hp.ngf, 4 * hp.ngf, 4 * hp.ngf, 4 * hp.ngf)
    return {
        "G": ref.randomize_(ref.ResnetGenerator(ngf=hp.ngf), seed=1, scale=0.5),
        "D": ref.randomize_(tref.NLayerDiscriminator(3, hp.ndf), seed=2),
        "D_p": ref.randomize_(tref.NLayerDiscriminator(6, hp.ndf), seed=3),
        "F": ref.randomize_(tref.PatchSampleF(ch, hp.netF_nc), seed=4),
        "F_s": ref.randomize_(tref.PatchSampleF(ch, hp.netF_nc), seed=5),
    }


def _convert(nets, hp):
    return {
        "G": convert_translator.convert_state_dict(_sd(nets["G"]), ngf=hp.ngf).params,
        "D": convert_patchgan.convert_discriminator(_sd(nets["D"])).params,
        "D_p": convert_patchgan.convert_pair_discriminator(_sd(nets["D_p"])).params,
        "F": convert_projection.convert_state_dict(_sd(nets["F"])).params,
        "F_s": convert_projection.convert_state_dict(_sd(nets["F_s"])).params,
    }


def _flat(tree):
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _jax_name(torch_name):
    # model.12.conv_block.5.weight -> model_12/conv_block_5/kernel ; mlp_0.2.bias -> mlp_0_2/bias
    parts = torch_name.split(".")
    leaf = {"weight": "kernel", "bias": "bias"}[parts[-1]]
    mods, out = parts[:-1], []
    for p in mods:
        if p.isdigit():
            out[-1] = f"{out[-1]}_{p}"
        else:
            out.append(p)
    return "/".join(out + [leaf])


def _to_torch_layout(name, value):
    if value.ndim == 4:
        return np.transpose(value, (3, 2, 0, 1))
    if value.ndim == 2:
        return value.T
    return value


@pytest.mark.parametrize(
    "faithful_to", ["official_code", pytest.param("paper", marks=pytest.mark.slow)]  # ~60 s each (XLA compile)
)
def test_train_step_equals_official_iteration(faithful_to):
    use_vgg = faithful_to == "paper"  # the paper-mode run also exercises the VGG content loss (Q3)
    hp = S.I2IHParams(faithful_to=faithful_to, ngf=8, ndf=8, netF_nc=32, lambda_VGG=0.1 if use_vgg else -1.0)
    torch.manual_seed(0)
    nets = _torch_nets(hp)
    params = _convert(nets, hp)
    vgg_torch, vgg_params = None, None
    if use_vgg:
        vgg_torch = tref.VGG19()
        ref.randomize_(vgg_torch.features, seed=6, scale=0.5)
        vgg_params = trim_params(convert_vgg.convert_state_dict(_sd(vgg_torch)).params, CONV4_4)

    rng = np.random.default_rng(0)
    batch = {k: rng.uniform(-1, 1, size=(1, SIZE, SIZE, 3)).astype(np.float32) for k in ("x", "y", "x_p", "y_p")}
    key = jax.random.key(42)
    ids = S.draw_patch_ids(key, hp, (SIZE, SIZE), 1)
    schedule = S.EpochSchedule.for_epoch(hp, EPOCH)

    tx = S.make_optimizer(hp)
    state = S.TrainState(step=np.int32(0), params=params, opt_state={n: tx.init(params[n]) for n in S.NETWORKS})
    step = jax.jit(lambda st, b, r, s, v: S.train_step(st, b, r, s, v, hparams=hp))
    new_state, metrics = step(state, batch, key, schedule, vgg_params)  # positions drawn from `key`

    lr = hp.lr * S.lr_multiplier(hp, EPOCH)
    opts = {n: torch.optim.Adam(m.parameters(), lr=lr, betas=(0.5, 0.999), eps=1e-8) for n, m in nets.items()}
    want = tref.training_iteration(
        nets, opts, {k: ref.nchw(v) for k, v in batch.items()},
        [torch.from_numpy(np.asarray(i, np.int64)) for i in ids.unpaired],
        [torch.from_numpy(np.asarray(i, np.int64)) for i in ids.paired],
        epoch=EPOCH, faithful_to=faithful_to, lambda_vgg=hp.lambda_VGG, vgg=vgg_torch,
    )

    for name in ("D", "D_p", "G", "SRC", "HDCE", "HDCE_Y", "NCE_s", "G_GAN", "G_GAN_p"):
        np.testing.assert_allclose(float(metrics[name]), want[name], rtol=1e-4, err_msg=name)
    assert float(metrics["lambda_pair"]) == pytest.approx(tref.lambda_pair(EPOCH, 20, faithful_to), abs=1e-7)

    compared = total = 0
    for net, module in nets.items():
        # float noise of gradients that are zero in exact arithmetic scales with the network's gradients
        net_scale = max(float(np.max(np.abs(opts[net].state[p]["exp_avg"].numpy()))) for p in module.parameters())
        new_params = _flat(new_state.params[net])
        mu = _flat(new_state.opt_state[net][0].mu)
        old = _flat(params[net])
        for tname, p in module.named_parameters():
            jname = _jax_name(tname)
            grad_t = opts[net].state[p]["exp_avg"].numpy()
            grad_j = _to_torch_layout(jname, mu[jname])
            scale = np.max(np.abs(grad_t))
            assert scale > 0, (net, tname)
            np.testing.assert_allclose(grad_j, grad_t, atol=2e-4 * scale + 1e-5 * net_scale, rtol=0, err_msg=f"grad {net} {tname}")

            delta_t = p.detach().numpy() - _to_torch_layout(jname, old[jname])
            delta_j = _to_torch_layout(jname, new_params[jname] - old[jname])
            sure = (np.abs(grad_t) > 1e-3 * scale) & (np.abs(grad_t) > 1e-4 * net_scale)
            np.testing.assert_allclose(delta_j[sure], delta_t[sure], atol=2.5e-7 + 1e-5 * lr, rtol=0,
                                       err_msg=f"update {net} {tname}")
            assert np.all(np.abs(delta_j) <= lr + 1e-6), (net, tname)  # plus float32 rounding of p
            compared += int(sure.sum())
            total += sure.size
    assert compared > 0.9 * total, (compared, total)
    assert int(new_state.step) == 1


def test_schedules_match_appendix_a():
    hp = S.I2IHParams()
    paper = S.I2IHParams(faithful_to="paper")
    assert [S.lambda_pair(hp, e) for e in range(1, 21)] == pytest.approx([1.0] * 20, abs=1e-12)
    assert S.lambda_pair(paper, 2) == pytest.approx(0.9969, abs=1e-4)
    assert S.lambda_pair(paper, 20) == pytest.approx(0.0785, abs=1e-4)
    assert [S.hdce_gamma(hp, e) for e in (1, 10, 20)] == pytest.approx([48, 30, 10])
    assert [S.lr_multiplier(hp, e) for e in (1, 10, 11, 15, 20)] == pytest.approx([1, 1, 10 / 11, 6 / 11, 1 / 11])
    with pytest.raises(ValueError):
        S.I2IHParams(faithful_to="neither")


@pytest.mark.slow  # two compiles' worth of XLA time on 2 cores (~100 s)
def test_epoch_change_does_not_recompile_and_state_is_donated():
    hp = S.I2IHParams(ngf=8, ndf=8, netF_nc=32, n_blocks=5)
    state = S.create_train_state(jax.random.key(0), hp, 32)
    counts = {k: sum(a.size for a in jax.tree_util.tree_leaves(v)) for k, v in state.params.items()}
    assert counts["F"] == counts["F_s"]
    step = S.make_train_step(hp)
    rng = np.random.default_rng(1)
    batch = {k: rng.uniform(-1, 1, size=(2, 32, 32, 3)).astype(np.float32) for k in ("x", "y", "x_p", "y_p")}
    old_leaf = jax.tree_util.tree_leaves(state.params["G"])[0]
    state, m1 = step(state, batch, jax.random.key(1), S.EpochSchedule.for_epoch(hp, 1))
    assert old_leaf.is_deleted()  # donated
    state, m2 = step(state, batch, jax.random.key(2), S.EpochSchedule.for_epoch(hp, 15))
    assert step._cache_size() == 1
    assert float(m2["lr_scale"]) == pytest.approx(6 / 11) and float(m2["hdce_gamma"]) == pytest.approx(20)
    assert all(np.isfinite(float(v)) for v in m2.values())
    assert int(state.step) == 2


def test_create_train_state_uses_cut_init():
    hp = S.I2IHParams()
    state = jax.eval_shape(lambda: S.create_train_state(jax.random.key(0), hp, 256))
    counts = {k: sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(v)) for k, v in state.params.items()}
    assert counts == {"G": 11_378_179, "D": 2_764_737, "D_p": 2_767_809, "F": 560_384, "F_s": 560_384}


def test_torch_instance_norm_channels_last_gradient_bug():
    """Documents why the PyTorch reference gathers patches before permuting (see cut_training.py).

    If this starts failing, torch fixed InstanceNorm2d's backward for channels-last incoming gradients
    and the workaround in `PatchSampleF.forward` is no longer needed (it stays correct either way).
    """
    torch.manual_seed(0)
    x = torch.randn(1, 32, 8, 8, dtype=torch.float64, requires_grad=True)
    c = torch.randn(1, 8, 8, 32, dtype=torch.float64)
    (torch.nn.functional.instance_norm(x).permute(0, 2, 3, 1) * c).sum().backward()
    channels_last = x.grad.clone()
    x.grad = None
    (torch.nn.functional.instance_norm(x) * c.permute(0, 3, 1, 2).contiguous()).sum().backward()
    assert np.max(np.abs((channels_last - x.grad).numpy())) > 1e-3


@pytest.mark.parametrize(
    "kwargs,message",
    [({"n_blocks": 4}, "n_blocks must be >= 5"), ({"faithful_to": "pytorch"}, "faithful_to"),
     ({"nce_layers": (0, 4)}, "nce_layers")],
)
def test_bad_hyperparameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        S.I2IHParams(**kwargs)
