"""One iteration of the semantic-constrained StyleGAN2 fine-tuning (docs/reference.md §4) as a pure function.

`train_step(state, batch, rng, hparams=..., nets=...)` reproduces an iteration of the authors'
`train_patch_clip_con_loss.py` (a Cartoon-StyleGAN / rosinality `train.py`, docs/reference.md §4.1-4.4):

1. **D step**: a fresh (style-mixed) batch of G_t images, non-saturating logistic loss, Adam.
2. **Lazy R1** on the *updated* D when `(start_iter + step) % d_reg_every == 0`: a second Adam step
   of D on `gamma / 2 * d_reg_every * R1`. The condition is a traced value (`lax.cond`), so R1 steps
   and plain steps share one compiled program.
3. **G step** (new z's) against the updated D: `L_adv + 0.01 L_con + 1.0 L_clip + 0.05 L_patch`, where
   the content, global CLIP and patch CLIP terms compare G_t(z) with the frozen source G_s(z).
   FreezeG = 3: only the last three resolution blocks of G_t train (docs/reference.md §4.3). An optax
   `multi_transform` gives the frozen leaves `set_to_zero` (no Adam slots at all) and the update is
   applied to the trainable leaves only, so frozen parameters stay bit-identical.
4. **EMA**: `g_ema <- d g_ema + (1 - d) G_t` over **all** parameters, `d = 0.5 ** (32 / 10000)`.

Official-code vs paper choices (docs/reference.md §4.6), selected by `faithful_to`:

| # | "official_code" | "paper" |
| S1 | content input `G_t(z) + 0.5` (precedence bug) | `(G_t(z) + 1) / 2` (LPIPS: not available) |
| S2 | patch NCE groups = official reshape (same location, other images at B = 16) | per image (other locations) |
| S3 | G_s and G_t draw their own crossover point and noise | shared crossover point and noise |
| S4 | CLIP in fp16 (CUDA `clip.load`) | - ; this port runs CLIP in float32 in both modes |
| S5 | ADA before the content/CLIP losses | - ; ADA is not implemented (the script's default is off) |

The patch temperature `patch_tau` (official 1.0; paper UNKNOWN, CUT uses 0.07) is a separate knob.

Batches: `{"real": [B, S, S, 3]}` in [-1, 1]. Every random input of a step (z's, crossover points,
noise, crop positions) comes from `draw_randomness(rng, ...)`; tests pass their own `StepRandomness`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from scenimefy_jax.losses import clip_losses, content
from scenimefy_jax.losses import stylegan as sg_losses
from scenimefy_jax.models import stylegan2 as sg
from scenimefy_jax.models.clip import CLIPVisionModel, encode_images
from scenimefy_jax.models.vgg import VGG19Features

FAITHFUL_TO = ("official_code", "paper")
INIT_FROM = ("g", "g_ema")


@dataclasses.dataclass(frozen=True)
class FinetuneHParams:
    """The official script's settings and the official-vs-paper switch (docs/reference.md §4.4, §4.6)."""

    faithful_to: str = "official_code"
    freeze_g: int = 3  # trainable last resolution blocks of G_t; -1: all of G_t trains (plain StyleGAN2)
    lambda_content: float = 0.01  # VGG19 conv4_4 MSE (0 disables; no VGG needed then)
    lambda_clip: float = 1.0  # global CLIP cosine loss (0 disables)
    lambda_patch: float = 0.05  # patch CLIP contrastive loss (0 disables; both CLIP terms 0: no CLIP needed)
    n_crops: int = 16
    crop_size: int = 32
    patch_tau: float = 1.0
    mixing: float = 0.9  # style-mixing probability
    r1_gamma: float = 10.0
    d_reg_every: int = 16
    g_reg_every: int = 4  # only sets G's lazy-regularisation lr/betas (path-length reg is off with FreezeG)
    lr: float = 0.002
    ema_decay: float = 0.5 ** (32 / (10 * 1000))  # rosinality: ema_kimg 10, batch-independent 32
    start_iter: int = 0  # iteration number of the source checkpoint (220000 for lhq-220000.pt): R1 phase

    def __post_init__(self):
        if self.faithful_to not in FAITHFUL_TO:
            raise ValueError(f"faithful_to must be one of {FAITHFUL_TO}, got {self.faithful_to!r}")
        if self.d_reg_every < 1 or self.g_reg_every < 1:
            raise ValueError("d_reg_every and g_reg_every must be >= 1")

    @property
    def patch_grouping(self) -> str:  # S2
        return "official" if self.faithful_to == "official_code" else "per_image"

    @property
    def share_pair_randomness(self) -> bool:  # S3
        return self.faithful_to == "paper"

    @property
    def uses_vgg(self) -> bool:
        return self.lambda_content > 0

    @property
    def uses_clip(self) -> bool:
        return self.lambda_clip > 0 or self.lambda_patch > 0

    def g_adam(self) -> tuple[float, tuple[float, float]]:
        return sg_losses.lazy_adam_hparams(self.lr, self.g_reg_every)

    def d_adam(self) -> tuple[float, tuple[float, float]]:
        return sg_losses.lazy_adam_hparams(self.lr, self.d_reg_every)


class Networks(NamedTuple):
    """The modules (hashable, static under jit). `vgg` / `clip` are None when their losses are off."""

    G: sg.Generator
    D: sg.Discriminator
    vgg: VGG19Features | None = None
    clip: CLIPVisionModel | None = None


# ----------------------------------------------------------------------------- FreezeG


def trainable_modules(G: sg.Generator, freeze_g: int) -> tuple[str, ...] | None:
    """Top-level G modules that train with FreezeG = `freeze_g` (None: all of them).

    Cartoon-StyleGAN unfreezes, for `layer` in range(freeze_g): `convs.{L-2-2 layer}`,
    `convs.{L-3-2 layer}`, `to_rgbs.{log_size-3-layer}` with L = num_layers; for 256 and 3 that is
    convs 6-11 and to_rgbs 3-5 (resolutions 64-256). The official code matches names by substring;
    here the module names are matched exactly (identical for every size, see docs/reference.md §4.3).
    """
    if freeze_g < 0:
        return None
    blocks = G.log_size - 2
    if freeze_g > blocks:
        raise ValueError(f"freeze_g={freeze_g} exceeds the {blocks} upsampling blocks of a {G.size}px generator")
    names = []
    for layer in range(freeze_g):
        names += [f"convs_{G.num_layers - 2 - 2 * layer}", f"convs_{G.num_layers - 3 - 2 * layer}",
                  f"to_rgbs_{G.log_size - 3 - layer}"]
    return tuple(names)


def freeze_labels(g_params: Mapping[str, Any], G: sg.Generator, freeze_g: int) -> dict:
    """The G parameter tree with every leaf replaced by `"train"` or `"frozen"`."""
    names = trainable_modules(G, freeze_g)
    return {
        k: jax.tree_util.tree_map(lambda _, lab=("train" if names is None or k in names else "frozen"): lab, v)
        for k, v in g_params.items()
    }


def g_optimizer(hp: FinetuneHParams, labels: Mapping[str, Any]) -> optax.GradientTransformation:
    """Adam with the lazy-regularisation lr/betas on the trainable leaves; frozen leaves get
    `set_to_zero` and therefore no optimiser slots (docs/reference.md §4.3-4.4)."""
    lr, (b1, b2) = hp.g_adam()
    return optax.multi_transform(
        {"train": optax.adam(lr, b1=b1, b2=b2, eps=1e-8), "frozen": optax.set_to_zero()}, labels)


def d_optimizer(hp: FinetuneHParams) -> optax.GradientTransformation:
    lr, (b1, b2) = hp.d_adam()
    return optax.adam(lr, b1=b1, b2=b2, eps=1e-8)


# ----------------------------------------------------------------------------- state


@flax.struct.dataclass
class FinetuneState:
    """Everything a fine-tuning step reads and writes.

    `g`, `g_ema`, `d`: G_t, its EMA and D (`params` trees). `g_opt`, `d_opt`: their Adam states.
    `frozen`: `{"g_s": source G params, "vgg": ..., "clip": ...}` (never updated; empty dicts for
    networks that are not used). They are jit arguments, not a closure, because a jitted function
    inlines closed-over arrays into the XLA program as constants (~0.5 GB at the official size); the
    job keeps them out of its checkpoints by handing them to the loop separately (`TrainTask.frozen`)
    and setting them into the state inside the jitted step.
    `noises`: the fixed noise buffers of `g`, `g_ema`, `g_s` (not trained; kept for the export and
    the fixed-latent image grids).
    """

    step: jax.Array
    g: Any
    g_ema: Any
    d: Any
    g_opt: Any
    d_opt: Any
    frozen: Any
    noises: Any


def create_finetune_state(
    source: Mapping[str, Any],
    hp: FinetuneHParams,
    nets: Networks,
    *,
    vgg_params: Any = None,
    clip_params: Any = None,
    init_from: str = "g",
    resume_optimizers: bool = True,
) -> FinetuneState:
    """The state at the start of fine-tuning from a converted rosinality checkpoint (host arrays).

    `source`: `{"g_ema": {"params", "noises"}, "g": {...}, "d": {"params"}}` (`convert/stylegan2.py`),
    optionally with the converted Adam states `"g_optim"`, `"d_optim"`.
    Official (`init_from="g"`): G_t <- `g`, D <- `d`, G_ema <- `g_ema`, G_s <- `g_ema` (frozen).
    `init_from="g_ema"` starts G_t from `g_ema` instead (then G_t's frozen layers equal G_s's).
    With `resume_optimizers` and both optimiser states in `source`, Adam resumes them as the official
    script does (docs/reference.md §4.2; see `resume_adam`); otherwise Adam starts fresh.
    """
    if init_from not in INIT_FROM:
        raise ValueError(f"init_from must be one of {INIT_FROM}, got {init_from!r}")
    missing = [k for k in (init_from, "g_ema", "d") if k not in source]
    if missing:
        raise ValueError(
            f"the source checkpoint lacks {missing}: fine-tuning needs 'g_ema', 'd' and the network "
            f"G_t starts from ({init_from!r}; init_from='g_ema' needs no 'g')")
    if hp.uses_vgg and vgg_params is None:
        raise ValueError("lambda_content > 0 needs VGG19 parameters")
    if hp.uses_clip and clip_params is None:
        raise ValueError("lambda_clip or lambda_patch > 0 needs CLIP parameters")
    as_np = lambda t: jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), t)  # noqa: E731
    g = as_np(source[init_from]["params"])
    d = as_np(source["d"]["params"])
    labels = freeze_labels(g, nets.G, hp.freeze_g)
    g_opt = g_optimizer(hp, labels).init(g)
    d_opt = d_optimizer(hp).init(d)
    if resume_optimizers and "g_optim" in source and "d_optim" in source:
        g_opt = resume_adam(g_opt, source["g_optim"], labels)
        d_opt = resume_adam(d_opt, source["d_optim"])
    return FinetuneState(
        step=np.zeros((), np.int32),
        g=g,
        g_ema=as_np(source["g_ema"]["params"]),
        d=d,
        g_opt=jax.device_get(g_opt),
        d_opt=jax.device_get(d_opt),
        frozen={
            "g_s": as_np(source["g_ema"]["params"]),
            "vgg": as_np(vgg_params) if hp.uses_vgg else {},
            "clip": as_np(clip_params) if hp.uses_clip else {},
        },
        noises={
            "g": as_np(source[init_from]["noises"]),
            "g_ema": as_np(source["g_ema"]["noises"]),
            "g_s": as_np(source["g_ema"]["noises"]),
        },
    )


def resume_adam(opt_state: Any, converted: Mapping[str, Any], labels: Mapping[str, Any] | None = None) -> Any:
    """`opt_state` (an optax Adam or FreezeG `multi_transform` state from `.init`) with the moments and
    step count of a converted torch Adam state (`{"exp_avg", "exp_avg_sq", "step"}`, see
    `convert.stylegan2.convert_adam_state`).

    torch keeps a step count per parameter, optax one per optimiser: the count is the largest step of
    the trained leaves (those labelled "train" in `labels`, all when None). Frozen leaves have no
    slots here (`set_to_zero`), so their moments, carried unused by the official optimiser, are dropped.
    """
    steps = jax.tree_util.tree_leaves(converted["step"] if labels is None else jax.tree_util.tree_map(
        lambda lab, s: s if lab == "train" else None, labels, converted["step"]))
    count = int(max((int(np.asarray(s)) for s in steps), default=0))

    def moments(slot, source):
        def take(m, c):
            if isinstance(m, optax.MaskedNode):
                return m
            if np.shape(m) != np.shape(c):
                raise ValueError(f"converted Adam moment of shape {np.shape(c)} for a parameter of shape {np.shape(m)}")
            return np.asarray(c, np.float32)

        return jax.tree_util.tree_map(take, slot, source, is_leaf=lambda x: isinstance(x, optax.MaskedNode))

    def fix(x):
        if isinstance(x, optax.ScaleByAdamState):
            return x._replace(count=np.asarray(count, np.int32), mu=moments(x.mu, converted["exp_avg"]),
                              nu=moments(x.nu, converted["exp_avg_sq"]))
        return x

    is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)  # noqa: E731
    if not any(is_adam(x) for x in jax.tree_util.tree_leaves(opt_state, is_leaf=is_adam)):
        raise ValueError("resume_adam: the optimiser state holds no Adam state")
    return jax.tree_util.tree_map(fix, opt_state, is_leaf=is_adam)


# ----------------------------------------------------------------------------- randomness


class StepRandomness(NamedTuple):
    """Every random input of one step. z's `[2, B, D]` (the second is used only past the crossover);
    crossover points are int32 scalars, `n_latent` meaning "no style mixing"; noise lists hold
    `[B, R, R, 1]` per layer; crop corners `[n_crops, 2]` (y, x)."""

    d_z: jax.Array
    d_inject: jax.Array
    d_noise: list
    g_z: jax.Array
    g_inject: jax.Array
    g_noise: list
    s_inject: jax.Array
    s_noise: list
    crops: jax.Array


def _noise(key, G: sg.Generator, batch: int) -> list:
    keys = jax.random.split(key, G.num_layers)
    return [jax.random.normal(k, (batch,) + s[1:]) for k, s in zip(keys, G.noise_shapes())]


def draw_randomness(rng: jax.Array, hp: FinetuneHParams, G: sg.Generator, batch: int) -> StepRandomness:
    """rosinality `mixing_noise`: with probability `mixing` two z's and a crossover point uniform in
    [1, n_latent - 1] (one per call, for the whole batch); otherwise one z (crossover = n_latent)."""
    k = jax.random.split(rng, 10)
    n = G.n_latent

    def crossover(k_mix, k_idx):
        mixing = jax.random.uniform(k_mix) < hp.mixing
        return jnp.where(mixing, jax.random.randint(k_idx, (), 1, n), n).astype(jnp.int32), mixing

    d_inject, _ = crossover(k[0], k[1])
    g_inject, g_mixing = crossover(k[2], k[3])
    g_noise = _noise(k[5], G, batch)
    if hp.share_pair_randomness:  # S3 paper: G_s renders exactly what G_t renders, with its weights
        s_inject, s_noise = g_inject, g_noise
    else:  # official: same z's and mixing decision, own crossover draw and own noise
        s_inject = jnp.where(g_mixing, jax.random.randint(k[6], (), 1, n), n).astype(jnp.int32)
        s_noise = _noise(k[7], G, batch)
    return StepRandomness(
        d_z=jax.random.normal(k[8], (2, batch, G.style_dim)),
        d_inject=d_inject,
        d_noise=_noise(k[4], G, batch),
        g_z=jax.random.normal(k[9], (2, batch, G.style_dim)),
        g_inject=g_inject,
        g_noise=g_noise,
        s_inject=s_inject,
        s_noise=s_noise,
        crops=clip_losses.sample_crop_positions(jax.random.fold_in(rng, 1), hp.n_crops, G.size, hp.crop_size),
    )


# ----------------------------------------------------------------------------- the step


def _render(G, params, noises, z, inject, noise):
    return G.apply({"params": params, "noises": noises}, [z[0], z[1]], inject_index=inject, noise=noise)


def _adam(tx, params, grads, opt_state):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def r1_due(hp: FinetuneHParams, step: jax.Array) -> jax.Array:
    """Lazy R1 at loop index `i = start_iter + step` when `i % d_reg_every == 0` (rosinality)."""
    return (jnp.asarray(hp.start_iter % hp.d_reg_every, jnp.int32) + step) % hp.d_reg_every == 0


def train_step(
    state: FinetuneState,
    batch: Mapping[str, jax.Array],
    rng: jax.Array,
    *,
    hparams: FinetuneHParams,
    nets: Networks,
    randomness: StepRandomness | None = None,
) -> tuple[FinetuneState, dict[str, jax.Array]]:
    """D step, lazy R1, G step, EMA (module docstring); returns `(state, metrics)`."""
    hp = hparams
    G, D = nets.G, nets.D
    real = jnp.asarray(batch["real"], jnp.float32)
    b = real.shape[0]
    r = randomness if randomness is not None else draw_randomness(rng, hp, G, b)
    d_tx = d_optimizer(hp)

    # 1. D step on a fresh fake batch (G_t gets no gradient here).
    fake_d = jax.lax.stop_gradient(_render(G, state.g, state.noises["g"], r.d_z, r.d_inject, r.d_noise))

    def d_loss_fn(p_d):
        # Two separate D calls, as the official code: the minibatch-stddev feature is per call.
        fake_pred = D.apply({"params": p_d}, fake_d)
        real_pred = D.apply({"params": p_d}, real)
        return sg_losses.d_logistic_loss(real_pred, fake_pred), (jnp.mean(real_pred), jnp.mean(fake_pred))

    (loss_d, (real_score, fake_score)), grad_d = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d)
    d, d_opt = _adam(d_tx, state.d, grad_d, state.d_opt)

    # 2. lazy R1: a second Adam step of D on the R1 loss alone, every d_reg_every iterations.
    def with_r1(d, d_opt):
        def r1_loss_fn(p_d):
            penalty, _ = sg_losses.r1_penalty(lambda x: D.apply({"params": p_d}, x), real)
            return sg_losses.lazy_r1_loss(penalty, hp.r1_gamma, hp.d_reg_every), penalty

        (_, penalty), grad = jax.value_and_grad(r1_loss_fn, has_aux=True)(d)
        d, d_opt = _adam(d_tx, d, grad, d_opt)
        return d, d_opt, penalty

    def without_r1(d, d_opt):
        return d, d_opt, jnp.zeros((), jnp.float32)

    apply_r1 = r1_due(hp, state.step)
    d, d_opt, r1 = jax.lax.cond(apply_r1, with_r1, without_r1, d, d_opt)

    # 3. G step against the updated D, with the source image G_s(z) as the semantic anchor.
    need_source = hp.uses_vgg or hp.uses_clip
    encode = None
    if hp.uses_clip:
        encode = lambda x: encode_images(nets.clip, state.frozen["clip"], x)  # noqa: E731
    vgg = None
    if hp.uses_vgg:
        vgg = lambda x: nets.vgg.apply({"params": state.frozen["vgg"]}, x)  # noqa: E731
    source = {}
    if need_source:
        x_s = jax.lax.stop_gradient(
            _render(G, state.frozen["g_s"], state.noises["g_s"], r.g_z, r.s_inject, r.s_noise))
        if hp.uses_vgg:
            source["vgg"] = vgg((x_s + 1.0) / 2.0)
        if hp.lambda_clip > 0:
            source["clip"] = encode(x_s)
        if hp.lambda_patch > 0:
            source["patch"] = encode(clip_losses.extract_crops(x_s, r.crops, hp.crop_size))
        source = jax.lax.stop_gradient(source)

    def g_loss_fn(p_g):
        fake = _render(G, p_g, state.noises["g"], r.g_z, r.g_inject, r.g_noise)
        terms = {"g_adv": sg_losses.g_nonsaturating_loss(D.apply({"params": d}, fake))}
        total = terms["g_adv"]
        if hp.uses_vgg:  # S1: official fake input G_t(z) + 0.5, paper (G_t(z) + 1) / 2
            terms["content"] = content.vgg_content_loss(
                vgg(content.vgg_input_for_fake(fake, hp.faithful_to)), source["vgg"])
            total = total + hp.lambda_content * terms["content"]
        if hp.lambda_clip > 0:
            terms["clip"] = clip_losses.clip_global_loss(source["clip"], encode(fake))
            total = total + hp.lambda_clip * terms["clip"]
        if hp.lambda_patch > 0:
            target = encode(clip_losses.extract_crops(fake, r.crops, hp.crop_size))
            terms["patch"] = clip_losses.patch_clip_loss(
                target, source["patch"], b, tau=hp.patch_tau, grouping=hp.patch_grouping)
            total = total + hp.lambda_patch * terms["patch"]
        return total, terms

    (loss_g, g_terms), grad_g = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g)
    labels = freeze_labels(state.g, G, hp.freeze_g)
    g_new, g_opt = _adam(g_optimizer(hp, labels), state.g, grad_g, state.g_opt)
    # Frozen leaves are taken from the old tree (not p + 0, which would turn -0.0 into +0.0).
    g = jax.tree_util.tree_map(lambda lab, new, old: old if lab == "frozen" else new, labels, g_new, state.g)

    # 4. EMA over every G parameter (frozen ones included: G_ema's low-res layers drift toward G_t's).
    decay = hp.ema_decay
    g_ema = jax.tree_util.tree_map(lambda e, p: e * decay + p * (1.0 - decay), state.g_ema, g)

    metrics = {
        "d": loss_d, "real_score": real_score, "fake_score": fake_score,
        "r1": r1, "r1_applied": apply_r1.astype(jnp.float32),
        "g": loss_g, **g_terms,
    }
    new_state = state.replace(step=state.step + 1, g=g, g_ema=g_ema, d=d, g_opt=g_opt, d_opt=d_opt)
    return new_state, metrics


def render_fixed(G: sg.Generator, params, noises, z: jax.Array) -> jax.Array:
    """Images `[B, S, S, 3]` of z `[B, D]` with the stored noise buffers, no mixing (image grids)."""
    return G.apply({"params": params, "noises": noises}, [z], randomize_noise=False)


__all__ = [
    "FAITHFUL_TO", "FinetuneHParams", "FinetuneState", "Networks", "StepRandomness", "create_finetune_state",
    "d_optimizer", "draw_randomness", "freeze_labels", "g_optimizer", "r1_due", "render_fixed", "resume_adam",
    "train_step", "trainable_modules",
]
