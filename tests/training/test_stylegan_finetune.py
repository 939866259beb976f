"""StyleGAN2 fine-tuning (docs/reference.md §4): one JAX step against the PyTorch reference iteration, FreezeG
(frozen parameters bit-identical, no optimiser slots), the lazy-R1 schedule, and the job end to end
with resume.

Small config: 16 px generator (channels 16/16/8, style_dim 16, 2 mapping layers), FreezeG = 1 (the last
of its two resolution blocks trains), batch 4, 4 crops of 8 px, a 1-layer CLIP ViT on 16 px inputs,
the full VGG19 up to conv4_4. Both sides resume Adam states as the official script resumes the LHQ
ones: torch Adam states with 100 previous steps (37 for the frozen G parameters) and random per-element
moments (second moments in [0.5, 1.5] x 1e-4, so the update is a smooth function of the gradient),
converted for JAX by `convert_adam_state` from their `state_dict()`, which checks the conversion's
parameter order and layouts through the update itself. Tolerances (float32): losses 1e-4 relative; parameters after the
step 1e-5 absolute + 1e-6 relative (the mapping kernels are stored x100).
"""
import copy
import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from scenimefy_jax import model_io  # noqa: E402
from scenimefy_jax.convert import clip as convert_clip  # noqa: E402
from scenimefy_jax.convert import stylegan2 as convert_sg  # noqa: E402
from scenimefy_jax.convert import vgg as convert_vgg  # noqa: E402
from scenimefy_jax.models import stylegan2 as sg  # noqa: E402
from scenimefy_jax.models.vgg import CONV4_4, VGG19Features, trim_params  # noqa: E402
from scenimefy_jax.training import stylegan_step as st  # noqa: E402
from tests.torch_reference import cut_training as ref_cut  # noqa: E402
from tests.torch_reference import stylegan2 as ref  # noqa: E402
from tests.torch_reference import stylegan_finetune as ref_ft  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE, STYLE, BATCH = 16, 16, 4
CH = {4: 16, 8: 16, 16: 8}
CLIP_VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                   image_size=16, patch_size=8)
CLIP_TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                 vocab_size=49408, max_position_embeddings=8)
HP = st.FinetuneHParams(freeze_g=1, n_crops=4, crop_size=8, d_reg_every=3, start_iter=6)
N_STEPS = 5
PRIOR_STEPS, FROZEN_STEPS = 100, 37


def _sd(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _random_adam(module, lr, betas, seed, trainable=lambda name: True):
    """torch Adam over `module.parameters()` with a resumed-looking random state (module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr, betas=betas, eps=1e-8)
    for name, p in module.named_parameters():
        opt.state[p] = {
            "step": torch.tensor(float(PRIOR_STEPS if trainable(name) else FROZEN_STEPS)),
            "exp_avg": 1e-3 * torch.randn(p.shape, generator=gen),
            "exp_avg_sq": 1e-4 * (0.5 + torch.rand(p.shape, generator=gen)),
        }
    return opt


def _flax_module(torch_name):
    """Top-level Flax module of a torch parameter name: `convs.2.conv.weight` -> `convs_2`."""
    head, second = torch_name.split(".")[:2]
    return f"{head}_{second}" if second.isdigit() else head


def _numpy_state(opt):
    """`opt.state_dict()` as the converter sees a loaded file: numpy copies (the torch step updates the
    state tensors in place afterwards)."""
    sd = opt.state_dict()
    return {"state": {i: {k: np.array(v.numpy(), copy=True) for k, v in st_.items()} for i, st_ in sd["state"].items()},
            "param_groups": copy.deepcopy(sd["param_groups"])}


def _adam_counts(opt_state):
    found = []
    jax.tree_util.tree_map(lambda x: found.append(int(x.count)) if isinstance(x, optax.ScaleByAdamState) else None,
                           opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
    return found


def _flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _run(hp, n_steps):
    """Builds the small networks in PyTorch, converts them, runs `n_steps` JAX steps from the same
    start and one PyTorch reference iteration with the randomness of JAX step 0."""
    torch.manual_seed(0)
    tg = ref.randomize_(ref.Generator(SIZE, STYLE, 2, channels=CH), seed=1)
    tge = copy.deepcopy(tg)  # g_ema differs from g (as in a real checkpoint)
    with torch.no_grad():
        for p in tge.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tsrc = copy.deepcopy(tge)
    td = ref.randomize_(ref.Discriminator(SIZE, channels=CH), seed=2)
    tvgg = ref_cut.VGG19()
    config = transformers.CLIPConfig(text_config=CLIP_TEXT, vision_config=CLIP_VISION, projection_dim=8)
    tclip = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        for name, p in tclip.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))

    G = sg.Generator(size=SIZE, style_dim=STYLE, n_mlp=2, channels=sg.channels_field(CH))
    D = sg.Discriminator(size=SIZE, channels=sg.channels_field(CH))
    clip_model = convert_clip.model_from_config(config.to_dict())
    source = {
        "g": convert_sg.convert_generator(_sd(tg), G, source="test", name="g"),
        "g_ema": convert_sg.convert_generator(_sd(tge), G, source="test", name="g_ema"),
        "d": convert_sg.convert_discriminator(_sd(td), D, source="test"),
    }
    vgg_params = trim_params(convert_vgg.convert_state_dict(_sd(tvgg)).params, CONV4_4)
    clip_params = convert_clip.convert_state_dict({k: v.numpy() for k, v in tclip.state_dict().items()},
                                                  model=clip_model).params
    nets = st.Networks(G, D, VGG19Features(last_layer=CONV4_4), clip_model)
    lr_g, betas_g = hp.g_adam()
    lr_d, betas_d = hp.d_adam()
    trainable = st.trainable_modules(G, hp.freeze_g)
    opts = dict(g_optim=_random_adam(tg, lr_g, betas_g, 3, lambda name: _flax_module(name) in trainable),
                d_optim=_random_adam(td, lr_d, betas_d, 4))
    for name, net in (("g_optim", "g"), ("d_optim", "d")):
        sd = _sd(tg) if net == "g" else _sd(td)
        model = G if net == "g" else D
        source[name], _ = convert_sg.convert_adam_state(_numpy_state(opts[name]), sd, model, source="test", name=name)
    state0 = st.create_finetune_state(source, hp, nets, vgg_params=vgg_params, clip_params=clip_params)
    state0 = jax.device_get(state0)

    step = jax.jit(lambda s, b, r: st.train_step(s, b, None, hparams=hp, nets=nets, randomness=r))
    draw = jax.jit(lambda k: st.draw_randomness(k, hp, G, BATCH))
    rng = np.random.default_rng(0)
    batches = [{"real": rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype(np.float32)} for _ in range(n_steps)]
    randomness = [jax.device_get(draw(jax.random.key(i))) for i in range(n_steps)]

    states, metrics = [], []
    state = jax.tree_util.tree_map(jnp.asarray, state0)
    for i in range(n_steps):
        state, m = step(state, batches[i], randomness[i])
        states.append(jax.device_get(state))
        metrics.append({k: float(v) for k, v in m.items()})

    torch_nets = dict(generator=tg, g_ema=tge, g_source=tsrc, discriminator=td, vgg=tvgg, clip=tclip)
    want = ref_ft.finetune_iteration(torch_nets, opts, batches[0]["real"], randomness[0]._asdict(), hp=hp,
                                     apply_r1=True, clip_image_size=CLIP_VISION["image_size"])
    torch_after = {
        "g": convert_sg.convert_generator(_sd(tg), G, source="torch", name="g")["params"],
        "g_ema": convert_sg.convert_generator(_sd(tge), G, source="torch", name="g_ema")["params"],
        "d": convert_sg.convert_discriminator(_sd(td), D, source="torch")["params"],
    }
    return dict(G=G, source=source, state0=state0, states=states, metrics=metrics, torch_losses=want, randomness=randomness,
                torch_after=torch_after, step=step)


@pytest.fixture(scope="module")
def setup():
    return _run(HP, N_STEPS)


def _check_parity(setup):
    got, want = setup["metrics"][0], setup["torch_losses"]
    assert got["r1_applied"] == 1.0  # start_iter 6, every 3: the first step regularises
    for name in ("d", "r1", "g", "g_adv", "content", "clip", "patch"):
        # Relative 1e-4 with an absolute floor: some terms are ~1e-4 themselves (the CLIP loss of a random
        # model: 2.41e-4 with a float32 difference of 4.5e-8), where a purely relative bound tests rounding.
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6, err_msg=name)
    after, before = setup["states"][0], setup["state0"]
    for net in ("g", "d", "g_ema"):
        g_flat, t_flat, b_flat = _flat(getattr(after, net)), _flat(setup["torch_after"][net]), _flat(getattr(before, net))
        assert g_flat.keys() == t_flat.keys()
        moved = 0
        for k in g_flat:
            np.testing.assert_allclose(g_flat[k], t_flat[k], rtol=1e-6, atol=1e-5, err_msg=f"{net} {k}")
            moved += not np.array_equal(t_flat[k], b_flat[k])
        assert moved > 0, net  # the comparison is not between two unchanged trees


def test_one_step_matches_pytorch(setup):
    _check_parity(setup)


@pytest.mark.slow
def test_one_step_matches_pytorch_paper_mode():
    """faithful_to="paper": content input (x + 1) / 2, per-image patch groups, shared G_s/G_t randomness."""
    hp = dataclasses.replace(HP, faithful_to="paper")
    run = _run(hp, 1)
    r = run["randomness"][0]
    assert int(r.s_inject) == int(r.g_inject) and all(np.array_equal(a, b) for a, b in zip(r.s_noise, r.g_noise))
    _check_parity(run)


def test_frozen_parameters_and_slots_never_change(setup):
    G, final = setup["G"], setup["states"][-1]
    trainable = set(st.trainable_modules(G, HP.freeze_g))
    assert trainable == {"convs_2", "convs_3", "to_rgbs_1"}  # the last (16 px) block of a 16 px G
    source_g = setup["source"]["g"]["params"]
    n_frozen = 0
    for name, sub in source_g.items():
        for k, v in _flat(sub).items():
            now = _flat(final.g[name])[k]
            if name in trainable:
                assert not np.array_equal(now, v), f"{name}{k} did not train"
            else:
                assert now.dtype == v.dtype and now.tobytes() == np.asarray(v).tobytes(), f"{name}{k} changed"
                n_frozen += 1
    assert n_frozen > 10
    # Optimiser slots exist only for trainable leaves (frozen ones have none that could change).
    mu = [x.mu for x in jax.tree_util.tree_leaves(final.g_opt, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
          if isinstance(x, optax.ScaleByAdamState)][0]
    assert set(mu) == set(source_g)  # frozen modules hold optax.MaskedNode placeholders, no arrays
    assert {name for name, sub in mu.items() if jax.tree_util.tree_leaves(sub)} == trainable
    # The frozen networks are untouched; G_ema moves everywhere (the EMA runs over all parameters).
    for a, b in zip(jax.tree_util.tree_leaves(final.frozen), jax.tree_util.tree_leaves(setup["state0"].frozen)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert not np.array_equal(final.g_ema["style_1"]["kernel"], setup["state0"].g_ema["style_1"]["kernel"])


def test_lazy_r1_schedule(setup):
    applied = [m["r1_applied"] for m in setup["metrics"]]
    assert applied == [1.0, 0.0, 0.0, 1.0, 0.0]  # (6 + step) % 3 == 0
    assert all((m["r1"] > 0) == bool(m["r1_applied"]) for m in setup["metrics"])
    # D takes a second Adam step on R1 steps; G one per step.
    assert _adam_counts(setup["states"][-1].d_opt) == [PRIOR_STEPS + N_STEPS + 2]
    assert _adam_counts(setup["states"][-1].g_opt) == [PRIOR_STEPS + N_STEPS]
    assert setup["step"]._cache_size() == 1  # the R1 condition is traced: one program for all steps
    official = st.FinetuneHParams(start_iter=220000)
    due = np.asarray(st.r1_due(official, jnp.arange(40)))
    assert list(np.flatnonzero(due)) == [0, 16, 32]  # 220000 % 16 == 0


def test_freeze_g_official_names():
    G = sg.Generator()  # 256 px
    assert set(st.trainable_modules(G, 3)) == {
        "convs_6", "convs_7", "convs_8", "convs_9", "convs_10", "convs_11", "to_rgbs_3", "to_rgbs_4", "to_rgbs_5"}
    assert st.trainable_modules(G, -1) is None
    with pytest.raises(ValueError):
        st.trainable_modules(G, 7)


def _job(workdir, cache, *extra):
    cmd = [sys.executable, "-m", "scenimefy_jax.main", "--config=configs/stylegan_finetune.py:tiny",
           f"--config.workdir={workdir}", f"--config.compilation_cache_dir={cache}", *extra]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


@pytest.mark.slow  # 1.5-3 minutes on 2 cores (two job processes compile the fine-tuning step)
def test_tiny_job_end_to_end_and_resume(tmp_path):
    """The job through main.py: 2 steps, then the same command with 4 steps resumes from step 2."""
    cache = tmp_path / "xla_cache"
    first = _job(tmp_path / "run", cache, "--config.num_steps=2")
    assert "NO CLIP WEIGHTS" in first and "NO VGG19 WEIGHTS" in first
    log = _job(tmp_path / "run", cache)
    assert "resumed from the checkpoint of step 2" in log
    for name in ("generator", "source", "samples.png", "metrics.jsonl", "images"):
        assert os.path.exists(tmp_path / "run" / name), name
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        assert '"step": 4' in f.read()
    # The export is what configs/sample.py loads.
    from scenimefy_jax.sampling import load_generator

    loaded = load_generator(str(tmp_path / "run" / "generator"))
    assert loaded.model.size == SIZE and set(loaded.variables) == {"params", "noises"}


@pytest.mark.slow
def test_resumed_job_is_bit_exact(tmp_path):
    cache = tmp_path / "xla_cache"
    _job(tmp_path / "straight", cache)
    _job(tmp_path / "resumed", cache, "--config.num_steps=2")
    _job(tmp_path / "resumed", cache)
    a = model_io.load_model(tmp_path / "straight" / "generator", expected_kind="stylegan2").params
    b = model_io.load_model(tmp_path / "resumed" / "generator", expected_kind="stylegan2").params
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)
