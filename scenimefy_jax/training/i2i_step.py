"""One iteration of semi-supervised translation (Scenimefy's `semi_cut` model) as a pure function.

`train_step(state, batch, rng, schedule)` reproduces the official `optimize_parameters` (docs/reference.md §2.5):
one generator forward on `[x; y; x^p]`, the D update, the D_p update, then the joint G + F + F_s
update from the same forward (through `jax.vjp`, so the fakes are not recomputed), with five Adam
optimisers. Everything that varies per epoch (lr multiplier, hDCE temperature, supervised weight)
arrives in `schedule`, a pytree of float32 scalars, so a new epoch never recompiles the step.

Batches: `{"x", "y", "x_p", "y_p"}`, each `[B, H, W, 3]` in [-1, 1] (x photo, y anime, (x_p, y_p) a
pseudo pair). Every loss is computed per image and averaged over the batch (docs/reference.md §2.10 Q14), so a global
batch sharded over a mesh's data axis gives the same numbers as on one device.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, NamedTuple, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from scenimefy_jax.losses import content, gan
from scenimefy_jax.losses import objective as obj
from scenimefy_jax.models.discriminator import PatchGANDiscriminator
from scenimefy_jax.models.projection import PatchProjector, sample_patch_ids, tap_channels
from scenimefy_jax.models.translator import NCE_LAYERS, ResnetGenerator
from scenimefy_jax.models.vgg import CONV4_4, VGG19Features

NETWORKS = ("G", "D", "D_p", "F", "F_s")
"""Keys of `TrainState.params` / `.opt_state`, in the official `model_names` spirit."""


@dataclasses.dataclass(frozen=True)
class I2IHParams:
    """Hyper-parameters of the official train.sh run (docs/reference.md §2.1) and the official-vs-paper switch."""

    faithful_to: str = "official_code"  # "official_code" | "paper": docs/reference.md §2.10 Q1-Q3
    # loss weights
    lambda_GAN: float = 1.0
    lambda_GAN_p: float = 1.0
    lambda_HDCE: float = 0.1
    lambda_SRC: float = 0.05
    lambda_NCE_s: float = 0.05  # train.sh flag (code default 0.1)
    lambda_VGG: float = -1.0  # <= 0 disables the VGG content loss (train.sh)
    dce_idt: bool = True  # identity branch G(y) for HDCE_Y
    decay_supervised: bool = True  # official `isDecay` (always True there, Q4)
    # contrastive settings
    nce_layers: tuple[int, ...] = NCE_LAYERS
    nce_T: float = 0.07
    num_patches: int = 256
    netF_nc: int = 256
    use_curriculum: bool = True
    hdce_gamma: float = 50.0
    hdce_gamma_min: float = 10.0
    share_patch_ids: bool = True  # official: one set of positions for the whole batch (Q9)
    # architecture
    ngf: int = 64
    n_blocks: int = 9
    ndf: int = 64
    n_layers_D: int = 3
    compute_dtype: str = "float32"  # "bfloat16": convs in bf16, params/losses/IN statistics float32
    # optimisation
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    eps: float = 1e-8
    n_epochs: int = 10
    n_epochs_decay: int = 10

    def __post_init__(self):
        if self.faithful_to not in obj.FAITHFUL_TO:
            raise ValueError(f"faithful_to must be one of {obj.FAITHFUL_TO}, got {self.faithful_to!r}")
        if tuple(self.nce_layers) != NCE_LAYERS:
            # the projection heads are built for the five official taps
            raise ValueError(f"nce_layers must be {NCE_LAYERS}, got {self.nce_layers}")
        if self.n_blocks < 5:
            # tap 16 is the output of the fifth residual block (docs/reference.md §1.6)
            raise ValueError(f"n_blocks must be >= 5 so that nce layer 16 is a residual block, got {self.n_blocks}")

    @property
    def total_epochs(self) -> int:
        return self.n_epochs + self.n_epochs_decay

    @property
    def dtype(self):
        return jnp.dtype(self.compute_dtype)


# ----------------------------------------------------------------------------- per-epoch schedules


def lr_multiplier(hp: I2IHParams, epoch: int) -> float:
    """Official linear policy (docs/reference.md §2.8): `1 - max(0, e - n_epochs) / (n_epochs_decay + 1)`, e 1-based."""
    return 1.0 - max(0, epoch - hp.n_epochs) / float(hp.n_epochs_decay + 1)


def hdce_gamma(hp: I2IHParams, epoch: int) -> float:
    """hDCE weight temperature: `50 + (10 - 50) * e / N` with the curriculum (48 at e=1, Q13)."""
    if not hp.use_curriculum:
        return hp.hdce_gamma
    return hp.hdce_gamma + (hp.hdce_gamma_min - hp.hdce_gamma) * epoch / hp.total_epochs


def lambda_pair(hp: I2IHParams, epoch: int) -> float:
    """Weight of the supervised branch (docs/reference.md §2.7, §2.10 Q1).

    official_code: `cos(pi/2 * N * (e-1))`, which is 1.0 for every integer epoch (precedence slip);
    paper: `cos(pi/2 * (e-1) / N)`, decaying 1.0 -> 0.0785 over N = 20 epochs.
    """
    if not hp.decay_supervised:
        return 1.0
    n = hp.total_epochs
    if hp.faithful_to == "official_code":
        return math.cos(math.pi / 2 * n * (epoch - 1))
    return math.cos(math.pi / 2 * (epoch - 1) / n)


@flax.struct.dataclass
class EpochSchedule:
    """The epoch-dependent values a step needs, as traced float32 scalars (no recompilation)."""

    lr_scale: jax.Array
    hdce_gamma: jax.Array
    lambda_pair: jax.Array

    @classmethod
    def for_epoch(cls, hp: I2IHParams, epoch: int) -> "EpochSchedule":
        """Host-side (float64) evaluation of the three schedules for 1-based `epoch`."""
        if epoch < 1:
            raise ValueError(f"epochs are 1-based, got {epoch}")
        f = lambda v: np.float32(v)  # noqa: E731
        return cls(f(lr_multiplier(hp, epoch)), f(hdce_gamma(hp, epoch)), f(lambda_pair(hp, epoch)))


# ----------------------------------------------------------------------------- networks and state


class Networks(NamedTuple):
    G: ResnetGenerator
    D: PatchGANDiscriminator
    D_p: PatchGANDiscriminator
    F: PatchProjector
    F_s: PatchProjector


def build_networks(hp: I2IHParams) -> Networks:
    dt = hp.dtype
    heads = PatchProjector(channels=tap_channels(hp.ngf), nc=hp.netF_nc)
    return Networks(
        G=ResnetGenerator(ngf=hp.ngf, n_blocks=hp.n_blocks, dtype=dt),
        D=PatchGANDiscriminator(ndf=hp.ndf, n_layers=hp.n_layers_D, dtype=dt),
        D_p=PatchGANDiscriminator(ndf=hp.ndf, n_layers=hp.n_layers_D, dtype=dt),
        F=heads,
        F_s=heads,
    )


def make_optimizer(hp: I2IHParams) -> optax.GradientTransformation:
    """Adam(lr 2e-4, betas 0.5/0.999, eps 1e-8), no weight decay (docs/reference.md §2.8); the epoch's
    multiplier is applied to the update in `train_step` (same as scaling the lr)."""
    return optax.adam(hp.lr, b1=hp.beta1, b2=hp.beta2, eps=hp.eps)


@flax.struct.dataclass
class TrainState:
    """Parameters and Adam states of the five networks (keys `NETWORKS`) and the step counter."""

    step: jax.Array
    params: dict[str, Any]
    opt_state: dict[str, Any]


def tap_spatial_sizes(image_hw: tuple[int, int], nce_layers: Sequence[int] = NCE_LAYERS) -> list[tuple[int, int]]:
    """(H, W) of the generator taps for an `image_hw` input (docs/reference.md §1.6): padded input, full, 1/2, 1/4."""
    h, w = image_hw

    def size(n: int, index: int) -> int:
        if index == 0:
            return n + 6
        if index < 7:
            return n
        half = -(-n // 2)
        return half if index < 11 else -(-half // 2)

    return [(size(h, i), size(w, i)) for i in nce_layers]


def create_train_state(rng: jax.Array, hparams: I2IHParams, image_size: int | tuple[int, int] = 256) -> TrainState:
    """Fresh parameters with CUT's init (xavier normal, gain 0.02, zero biases; docs/reference.md §2.4) and Adam states.

    The networks are fully convolutional, so `image_size` (H, W multiples of 4) only checks and sizes
    the init trace.
    """
    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if hw[0] % 4 or hw[1] % 4 or min(hw) < 32:
        raise ValueError(f"image size must be multiples of 4 and at least 32, got {hw}")
    nets = build_networks(hparams)
    keys = dict(zip(NETWORKS, jax.random.split(rng, len(NETWORKS))))
    image = jnp.zeros((1, *hw, 3), jnp.float32)
    taps = [jnp.zeros((1, 2, 2, c), jnp.float32) for c in tap_channels(hparams.ngf)]
    ids = [jnp.arange(4, dtype=jnp.int32)] * len(taps)

    @jax.jit
    def init(keys):
        return {
            "G": nets.G.init(keys["G"], image)["params"],
            "D": nets.D.init(keys["D"], image)["params"],
            "D_p": nets.D_p.init(keys["D_p"], jnp.concatenate([image, image], -1))["params"],
            "F": nets.F.init(keys["F"], taps, ids)["params"],
            "F_s": nets.F_s.init(keys["F_s"], taps, ids)["params"],
        }

    params = init(keys)
    tx = make_optimizer(hparams)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state={name: tx.init(params[name]) for name in NETWORKS},
    )


# ----------------------------------------------------------------------------- the step


class PatchIds(NamedTuple):
    """Positions per nce layer: `unpaired` serves F (HDCE/SRC, both branches), `paired` F_s."""

    unpaired: list[jax.Array]
    paired: list[jax.Array]


def draw_patch_ids(rng: jax.Array, hp: I2IHParams, image_hw: tuple[int, int], batch_size: int) -> PatchIds:
    """The positions `train_step` uses for `rng` (exposed so tests can hand them to a reference)."""
    sizes = tap_spatial_sizes(image_hw, hp.nce_layers)
    per_image = None if hp.share_patch_ids else batch_size
    k_unpaired, k_paired = jax.random.split(rng)
    return PatchIds(
        unpaired=sample_patch_ids(k_unpaired, sizes, hp.num_patches, per_image),
        paired=sample_patch_ids(k_paired, sizes, hp.num_patches, per_image),
    )


def _tile_ids(ids: Sequence[jax.Array], groups: int) -> list[jax.Array]:
    # Shared ids `[P]` serve any batch; per-image ids `[B, P]` repeat for each concatenated group.
    return [i if i.ndim == 1 else jnp.tile(i, (groups, 1)) for i in ids]


def _adam_update(tx, params, grads, opt_state, lr_scale):
    updates, opt_state = tx.update(grads, opt_state, params)
    updates = jax.tree_util.tree_map(lambda u: u * lr_scale, updates)
    return optax.apply_updates(params, updates), opt_state


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    rng: jax.Array,
    schedule: EpochSchedule,
    vgg_params: Any = None,
    *,
    hparams: I2IHParams,
    patch_ids: PatchIds | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """D step, D_p step, then the joint G + F + F_s step (docs/reference.md §2.5); returns `(state, metrics)`.

    `rng` only draws the patch positions (`draw_patch_ids`); `patch_ids` overrides them (tests).
    `vgg_params` (frozen, from `convert/vgg.py`) is required when `lambda_VGG > 0`.
    """
    hp = hparams
    nets = build_networks(hp)
    tx = make_optimizer(hp)
    params = state.params
    x, y, xp, yp = (jnp.asarray(batch[k], jnp.float32) for k in ("x", "y", "x_p", "y_p"))
    b = x.shape[0]
    layers = list(hp.nce_layers)
    if patch_ids is None:
        patch_ids = draw_patch_ids(rng, hp, x.shape[1:3], b)

    # 1. one generator forward on [x; y; x_p] (InstanceNorm is per image, so batching is exact);
    #    the taps of the real x and y are the keys of the unpaired branch (stop-gradient).
    inputs = jnp.concatenate([x, y, xp] if hp.dce_idt else [x, xp])

    def forward(p_g):
        image, taps = nets.G.apply({"params": p_g}, inputs, layers)
        return image, taps

    fakes, g_pullback, real_taps = jax.vjp(forward, params["G"], has_aux=True)
    real_taps = jax.lax.stop_gradient(real_taps)
    k_x = [t[:b] for t in real_taps]
    k_y = [t[b : 2 * b] for t in real_taps] if hp.dce_idt else None

    def split_fakes(f):
        return f[:b], (f[b : 2 * b] if hp.dce_idt else None), f[-b:]

    fake_x, _, fake_p = split_fakes(jax.lax.stop_gradient(fakes))

    # 2. D: 0.5 * [MSE(D(sg G(x)), 0) + MSE(D(y), 1)]
    def d_loss(p_d):
        pred = nets.D.apply({"params": p_d}, jnp.concatenate([fake_x, y]))
        return gan.discriminator_loss(pred[:b], pred[b:])

    (loss_d, (d_fake, d_real)), grad_d = _value_and_grad_aux(d_loss, params["D"])
    new_d, opt_d = _adam_update(tx, params["D"], grad_d, state.opt_state["D"], schedule.lr_scale)

    # 3. D_p on [photo, anime] channel pairs; never scaled by lambda_pair
    def dp_loss(p_dp):
        pairs = jnp.concatenate(
            [jnp.concatenate([xp, fake_p], -1), jnp.concatenate([xp, yp], -1)]
        )
        pred = nets.D_p.apply({"params": p_dp}, pairs)
        return gan.discriminator_loss(pred[:b], pred[b:])

    (loss_dp, (dp_fake, dp_real)), grad_dp = _value_and_grad_aux(dp_loss, params["D_p"])
    new_dp, opt_dp = _adam_update(tx, params["D_p"], grad_dp, state.opt_state["D_p"], schedule.lr_scale)

    # keys of the supervised branch: encoder taps of the pseudo target y_p (no gradient)
    k_p = jax.lax.stop_gradient(nets.G.apply({"params": params["G"]}, yp, layers, encode_only=True))

    # 4. G + F + F_s from the fakes of step 1, against the *updated* D and D_p
    def g_loss(p_g, fakes_, p_f, p_fs):
        f_x, f_y, f_p = split_fakes(fakes_)
        terms = {}
        terms["G_GAN"] = hp.lambda_GAN * gan.generator_gan_loss(nets.D.apply({"params": new_d}, f_x))
        pred_p = nets.D_p.apply({"params": new_dp}, jnp.concatenate([xp, f_p], -1))
        terms["G_GAN_p"] = hp.lambda_GAN_p * gan.generator_gan_loss(pred_p)

        queries = nets.G.apply(
            {"params": p_g}, jnp.concatenate([f_x, f_y, f_p] if hp.dce_idt else [f_x, f_p]), layers,
            encode_only=True,
        )
        q_x = [t[:b] for t in queries]
        q_y = [t[b : 2 * b] for t in queries] if hp.dce_idt else None
        q_p = [t[-b:] for t in queries]

        # F on [q_x; k_x; q_y; k_y] with one set of positions (official: ids drawn on the fake
        # features, reused for the real ones and for the identity branch)
        groups = [q_x, k_x] + ([q_y, k_y] if hp.dce_idt else [])
        stacked = [jnp.concatenate([g[l].astype(jnp.float32) for g in groups]) for l in range(len(layers))]
        projected = nets.F.apply({"params": p_f}, stacked, _tile_ids(patch_ids.unpaired, len(groups)))
        chunks = [[p[i * b : (i + 1) * b] for p in projected] for i in range(len(groups))]
        pq_x, pk_x = chunks[0], chunks[1]

        weights_x = obj.layer_weights(pk_x, schedule.hdce_gamma)
        terms["SRC"] = obj.src_term(pq_x, pk_x, hp.lambda_SRC)
        terms["HDCE"] = obj.hdce_term(pq_x, pk_x, weights_x, hp.lambda_HDCE, hp.nce_T)
        hdce_y = None
        if hp.dce_idt:
            pq_y, pk_y = chunks[2], chunks[3]
            weights_y = obj.layer_weights(pk_y, schedule.hdce_gamma)
            hdce_y = obj.hdce_term(pq_y, pk_y, weights_y, hp.lambda_HDCE, hp.nce_T)
            terms["HDCE_Y"] = hdce_y

        # F_s on [q_p; k_p] (official: ids drawn on the key y_p, reused for the query)
        stacked_p = [jnp.concatenate([q.astype(jnp.float32), k.astype(jnp.float32)]) for q, k in zip(q_p, k_p)]
        projected_p = nets.F_s.apply({"params": p_fs}, stacked_p, _tile_ids(patch_ids.paired, 2))
        terms["NCE_s"] = obj.style_nce_term(
            [p[:b] for p in projected_p], [p[b:] for p in projected_p], hp.lambda_NCE_s, hp.nce_T, hp.faithful_to
        )

        vgg = None
        if hp.lambda_VGG > 0:
            if vgg_params is None:
                raise ValueError("lambda_VGG > 0 needs vgg_params (convert a torchvision vgg19 file)")
            model = VGG19Features(last_layer=CONV4_4, dtype=hp.dtype)
            feats = model.apply(
                {"params": vgg_params},
                jnp.concatenate([content.vgg_input_for_fake(f_x, hp.faithful_to), (x + 1.0) / 2.0]),
            )
            vgg = hp.lambda_VGG * content.vgg_content_loss(feats[:b], feats[b:])
            terms["VGG"] = vgg

        total = obj.generator_objective(
            gan=terms["G_GAN"],
            gan_pair=terms["G_GAN_p"],
            hdce_x=terms["HDCE"],
            hdce_y=hdce_y,
            src=terms["SRC"],
            style_nce=terms["NCE_s"],
            lambda_pair=schedule.lambda_pair,
            vgg=vgg,
        )
        return total, terms

    (loss_g, g_terms), (grad_g_direct, grad_fakes, grad_f, grad_fs) = jax.value_and_grad(
        g_loss, argnums=(0, 1, 2, 3), has_aux=True
    )(params["G"], fakes, params["F"], params["F_s"])
    # gradient through the fakes back into G, via the saved forward of step 1
    (grad_g_fakes,) = g_pullback(grad_fakes)
    grad_g = jax.tree_util.tree_map(jnp.add, grad_g_direct, grad_g_fakes)

    new_params, new_opt = {"D": new_d, "D_p": new_dp}, {"D": opt_d, "D_p": opt_dp}
    for name, grad in (("G", grad_g), ("F", grad_f), ("F_s", grad_fs)):
        new_params[name], new_opt[name] = _adam_update(
            tx, params[name], grad, state.opt_state[name], schedule.lr_scale
        )

    metrics = {
        "D": loss_d, "D_fake": d_fake, "D_real": d_real,
        "D_p": loss_dp, "D_p_fake": dp_fake, "D_p_real": dp_real,
        "G": loss_g, **g_terms,
        "lr_scale": schedule.lr_scale, "hdce_gamma": schedule.hdce_gamma, "lambda_pair": schedule.lambda_pair,
    }
    new_state = TrainState(
        step=state.step + 1,
        params={n: new_params[n] for n in NETWORKS},
        opt_state={n: new_opt[n] for n in NETWORKS},
    )
    return new_state, metrics


def _value_and_grad_aux(loss_fn, params):
    """`value_and_grad` of a function returning `(loss, fake_term, real_term)`."""

    def wrapped(p):
        loss, fake, real = loss_fn(p)
        return loss, (fake, real)

    return jax.value_and_grad(wrapped, has_aux=True)(params)


def make_train_step(hparams: I2IHParams, *, donate: bool = True):
    """`jit(train_step)` for `hparams`: `step(state, batch, rng, schedule, vgg_params=None)`.

    The state is donated (its buffers are reused for the new state). Under a `jax.sharding.Mesh`,
    pass the batch sharded on the data axis and the state replicated: the losses are per-image means,
    so results equal the single-device ones.
    """
    fn = functools.partial(train_step, hparams=hparams)
    return jax.jit(fn, donate_argnums=(0,) if donate else ())
