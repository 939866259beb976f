"""rosinality StyleGAN2 checkpoints (`lhq-220000.pt`, `shinkai-221000.pt`, ...) -> Flax variables.

A rosinality `.pt` is a dict `{"g_ema", "g", "d", "g_optim", "d_optim", "args", "ada_aug_p"}` (only
`g_ema` is required here). Every tensor key of docs/reference.md §3.1-3.2 is loaded strictly, unlike the
official `load_state_dict(strict=False)` (quirk P4): a missing, unexpected or mis-shaped key is refused by name.
The fixed blur buffers are verified against their closed form, and the stored `noises.noise_*` buffers
are kept as the generator's fixed noise. The Adam states `g_optim` / `d_optim` (which the official
fine-tuning script resumes, docs/reference.md §4.2) are converted too; `args` and `ada_aug_p` are accepted
and dropped.

Result (`ConvertedModel.params`): `{"g_ema": {"params", "noises"}, "g": {...}, "d": {"params"}}` (the
networks present in the file), each directly usable as `Generator.apply(variables, ...)`, plus
`{"g_optim", "d_optim": {"exp_avg", "exp_avg_sq", "step"}}` when the file has them: three trees shaped
like the network's `params` (Adam's first and second moments in the Flax layout, and each parameter's
step count). The architecture is inferred from the tensor shapes (size, style_dim, n_mlp, channels);
`architecture["optimizers"]` records each optimiser's lr / betas / eps.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Mapping

import jax
import numpy as np

from scenimefy_jax.convert import registry
from scenimefy_jax.convert.torch_checkpoint import (
    CheckpointError,
    check_fixed_buffer,
    check_state_dict,
)
from scenimefy_jax.models import stylegan2 as sg
from scenimefy_jax.models.upfirdn import make_kernel

KIND = "stylegan2"
_log = logging.getLogger(__name__)
NETWORKS = ("g_ema", "g", "d")
OPTIMIZERS = {"g_optim": "g", "d_optim": "d"}  # optimiser entry -> the network it steps
IGNORED_ENTRIES = ("args", "ada_aug_p", "latent_avg")


def torch_key(path: tuple[str, ...]) -> str:
    """Flax param path -> PyTorch key: `convs_4/conv/kernel` -> `convs.4.conv.weight`."""
    parts = [re.sub(r"_(\d+)", r".\1", p) for p in path[:-1]]
    leaf = "weight" if path[-1] == "kernel" else path[-1]
    return ".".join(parts + [leaf])


def _is_modulated(path: tuple[str, ...]) -> bool:
    return len(path) >= 2 and path[-2] == "conv" and path[-1] == "kernel"


def torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of the tensor that becomes the Flax leaf `path` of `shape`."""
    if _is_modulated(path):  # (k, k, I, O) <- (1, O, I, k, k)
        k, _, i, o = shape
        return (1, o, i, k, k)
    if path[-1] == "kernel" and len(shape) == 4:  # EqualConv2d (k, k, I, O) <- (O, I, k, k)
        k, _, i, o = shape
        return (o, i, k, k)
    if path[-1] == "kernel" and len(shape) == 2:  # EqualLinear (in, out) <- (out, in)
        return shape[::-1]
    if path[-2:] == ("input", "input"):  # (1, H, W, C) <- (1, C, H, W)
        return (shape[0], shape[3], shape[1], shape[2])
    if len(path) == 2 and path[-1] == "bias" and path[0].startswith("to_rgb"):  # (3,) <- (1, 3, 1, 1)
        return (1, shape[0], 1, 1)
    return tuple(shape)


def to_flax(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    if _is_modulated(path):
        value = np.transpose(value[0], (2, 3, 1, 0))
    elif path[-1] == "kernel" and value.ndim == 4:
        value = np.transpose(value, (2, 3, 1, 0))
    elif path[-1] == "kernel" and value.ndim == 2:
        value = value.T
    elif path[-2:] == ("input", "input"):
        value = np.transpose(value, (0, 2, 3, 1))
    elif len(path) == 2 and path[-1] == "bias" and path[0].startswith("to_rgb"):
        value = value.reshape(-1)
    return np.ascontiguousarray(value, dtype=np.float32)


def _leaf_shapes(tree) -> dict[tuple[str, ...], tuple[int, ...]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def _buffers_generator(model: sg.Generator) -> dict[str, np.ndarray]:
    blur = make_kernel(model.blur_kernel) * 4
    out = {}
    for j in range(0, 2 * (model.log_size - 2), 2):
        out[f"convs.{j}.conv.blur.kernel"] = blur
    for m in range(model.log_size - 2):
        out[f"to_rgbs.{m}.upsample.kernel"] = blur
    return out


def _buffers_discriminator(model: sg.Discriminator) -> dict[str, np.ndarray]:
    blur = make_kernel(model.blur_kernel)
    out = {}
    for j in range(1, int(np.log2(model.size)) - 1):
        out[f"convs.{j}.conv2.0.kernel"] = blur
        out[f"convs.{j}.skip.0.kernel"] = blur
    return out


def generator_shapes(model: sg.Generator) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """(Flax param leaf shapes, every PyTorch key of the generator state dict with its shape)."""
    variables = jax.eval_shape(lambda k: sg.init_generator(model, k), jax.random.key(0))
    leaves = _leaf_shapes(variables["params"])
    shapes = {torch_key(p): torch_shape(p, s) for p, s in leaves.items()}
    shapes.update({k: v.shape for k, v in _buffers_generator(model).items()})
    for i, s in enumerate(model.noise_shapes()):
        shapes[f"noises.noise_{i}"] = (1, 1, s[1], s[2])
    return leaves, shapes


def discriminator_shapes(model: sg.Discriminator) -> tuple[dict, dict[str, tuple[int, ...]]]:
    x = jax.ShapeDtypeStruct((1, model.size, model.size, 3), np.float32)
    variables = jax.eval_shape(lambda k, x: model.init(k, x), jax.random.key(0), x)
    leaves = _leaf_shapes(variables["params"])
    shapes = {torch_key(p): torch_shape(p, s) for p, s in leaves.items()}
    shapes.update({k: v.shape for k, v in _buffers_discriminator(model).items()})
    return leaves, shapes


def _nest(flat: Mapping[tuple[str, ...], np.ndarray]) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    return out


def infer_architecture(g: Mapping[str, np.ndarray], source: str, lr_mlp: float = 0.01) -> dict:
    """Generator hyper-parameters from the `g_ema` tensor shapes (JSON-serialisable)."""
    try:
        style_dim = int(g["style.1.weight"].shape[0])
        n_mlp = len({k.split(".")[1] for k in g if re.fullmatch(r"style\.\d+\.weight", k)})
        n_rgbs = len({k.split(".")[1] for k in g if re.fullmatch(r"to_rgbs\.\d+\.bias", k)})
        size = 2 ** (n_rgbs + 2)
        channels = {4: int(g["conv1.conv.weight"].shape[1])}
        for m in range(n_rgbs):
            channels[2 ** (m + 3)] = int(g[f"convs.{2 * m}.conv.weight"].shape[1])
    except (KeyError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{source}: g_ema is not a rosinality StyleGAN2 generator (missing {e})") from None
    arch = {"model": "StyleGAN2", "size": size, "style_dim": style_dim, "n_mlp": n_mlp, "lr_mlp": lr_mlp}
    for cm in (1, 2, 4, 8):
        table = sg.default_channels(cm)
        if all(table[r] == c for r, c in channels.items()):
            return {**arch, "channel_multiplier": cm, "channels": None}
    return {**arch, "channel_multiplier": 2, "channels": {str(r): c for r, c in sorted(channels.items())}}


def generator_from_architecture(arch: Mapping[str, Any], **overrides) -> sg.Generator:
    channels = arch.get("channels")
    return sg.Generator(
        size=int(arch["size"]),
        style_dim=int(arch["style_dim"]),
        n_mlp=int(arch["n_mlp"]),
        channel_multiplier=int(arch.get("channel_multiplier", 2)),
        lr_mlp=float(arch.get("lr_mlp", 0.01)),
        channels=None if channels is None else sg.channels_field({int(k): v for k, v in channels.items()}),
        **overrides,
    )


def discriminator_from_architecture(arch: Mapping[str, Any]) -> sg.Discriminator:
    channels = arch.get("channels")
    return sg.Discriminator(
        size=int(arch["size"]),
        channel_multiplier=int(arch.get("channel_multiplier", 2)),
        channels=None if channels is None else sg.channels_field({int(k): v for k, v in channels.items()}),
    )


def convert_generator(sd: Mapping[str, np.ndarray], model: sg.Generator, *, source: str, name: str) -> dict:
    """A generator state dict -> `{"params", "noises"}` (strict)."""
    leaves, shapes = generator_shapes(model)
    check_state_dict(sd, shapes, source=f"{source} [{name}]", kind=KIND)
    for key, value in _buffers_generator(model).items():
        check_fixed_buffer(sd[key], value, key=f"{name}.{key}", source=source)
    params = _nest({p: to_flax(p, sd[torch_key(p)]) for p in leaves})
    noises = {
        f"noise_{i}": np.ascontiguousarray(np.transpose(sd[f"noises.noise_{i}"], (0, 2, 3, 1)), dtype=np.float32)
        for i in range(model.num_layers)
    }
    return {"params": params, "noises": noises}


def convert_discriminator(sd: Mapping[str, np.ndarray], model: sg.Discriminator, *, source: str, name: str = "d") -> dict:
    leaves, shapes = discriminator_shapes(model)
    check_state_dict(sd, shapes, source=f"{source} [{name}]", kind=KIND)
    for key, value in _buffers_discriminator(model).items():
        check_fixed_buffer(sd[key], value, key=f"{name}.{key}", source=source)
    return {"params": _nest({p: to_flax(p, sd[torch_key(p)]) for p in leaves})}


def buffer_keys(model: sg.Generator | sg.Discriminator) -> set[str]:
    """State-dict keys of `model` that are buffers, not parameters (blur kernels, stored noise)."""
    if isinstance(model, sg.Discriminator):
        return set(_buffers_discriminator(model))
    return set(_buffers_generator(model)) | {f"noises.noise_{i}" for i in range(model.num_layers)}


def convert_adam_state(
    optimizer: Any,
    net_sd: Mapping[str, np.ndarray],
    model: sg.Generator | sg.Discriminator,
    *,
    source: str,
    name: str,
) -> tuple[dict, dict]:
    """A `torch.optim.Adam.state_dict()` over `model.parameters()` -> (`{"exp_avg", "exp_avg_sq",
    "step"}` trees shaped like the network's params, `{"lr", "betas", "eps", "weight_decay"}`).

    torch numbers the parameters of an optimiser in `parameters()` order, which is the state-dict
    order without the buffers (both walk the modules depth first), so index i of the single parameter
    group is the i-th parameter key of `net_sd` (the network saved beside it in the same file). The
    moments go through the network's own converter, so they get the parameters' layouts and the same
    strict name/shape check. A parameter without state (never stepped) gets zero moments and step 0.
    """
    if not isinstance(optimizer, Mapping) or not {"state", "param_groups"} <= set(optimizer):
        raise CheckpointError(f"{source}: entry {name!r} is not a torch optimiser state dict "
                              "(expected 'state' and 'param_groups')")
    groups = optimizer["param_groups"]
    if not isinstance(groups, (list, tuple)) or len(groups) != 1 or "params" not in groups[0]:
        raise CheckpointError(f"{source}: {name} must hold exactly one parameter group (rosinality's Adam), "
                              f"found {len(groups) if isinstance(groups, (list, tuple)) else groups!r}")
    group = groups[0]
    if group.get("amsgrad", False):
        raise CheckpointError(f"{source}: {name} is an AMSGrad Adam state; only plain Adam is supported")
    keys = [k for k in net_sd if k not in buffer_keys(model)]
    indices = list(group["params"])
    if len(indices) != len(keys):
        raise CheckpointError(
            f"{source}: {name} steps {len(indices)} parameters but the network {OPTIMIZERS[name]!r} beside it has "
            f"{len(keys)}: the optimiser state does not belong to this network")
    state = optimizer["state"]
    converted, steps = {}, {}
    for field in ("exp_avg", "exp_avg_sq"):
        pseudo = dict(net_sd)
        for index, key in zip(indices, keys):
            entry = state.get(index)
            if entry is None:  # never stepped: torch would start this parameter's moments at zero
                pseudo[key] = np.zeros_like(net_sd[key])
                steps[key] = 0
                continue
            if not isinstance(entry, Mapping) or field not in entry or "step" not in entry:
                raise CheckpointError(f"{source}: {name} state of parameter {index} ({key}) lacks {field!r}/'step'")
            pseudo[key] = np.asarray(entry[field], np.float32)
            steps[key] = int(np.asarray(entry["step"]))
        label = f"{name}.{field}"
        if isinstance(model, sg.Discriminator):
            converted[field] = convert_discriminator(pseudo, model, source=source, name=label)["params"]
        else:
            converted[field] = convert_generator(pseudo, model, source=source, name=label)["params"]
    leaves = _leaf_shapes(converted["exp_avg"])
    converted["step"] = _nest({p: np.asarray(steps[torch_key(p)], np.int32) for p in leaves})
    hparams = {"lr": float(group.get("lr", float("nan"))), "betas": [float(b) for b in group.get("betas", ())],
               "eps": float(group.get("eps", float("nan"))), "weight_decay": float(group.get("weight_decay", 0.0))}
    return converted, hparams


def _state_dict(entry: Any, name: str, source: str) -> dict[str, np.ndarray]:
    if not isinstance(entry, Mapping) or not all(isinstance(v, np.ndarray) for v in entry.values()):
        raise CheckpointError(f"{source}: entry {name!r} is not a state dict of tensors")
    if entry and all(k.startswith("module.") for k in entry):  # DistributedDataParallel saves
        entry = {k[len("module.") :]: v for k, v in entry.items()}
    return dict(entry)


def convert_checkpoint(checkpoint: Any, source: str = "<checkpoint>", *, lr_mlp: float = 0.01) -> registry.ConvertedModel:
    if not isinstance(checkpoint, Mapping) or "g_ema" not in checkpoint:
        raise CheckpointError(f"{source}: a rosinality StyleGAN2 checkpoint is a dict with a 'g_ema' entry")
    unknown = sorted(set(checkpoint) - set(NETWORKS) - set(OPTIMIZERS) - set(IGNORED_ENTRIES))
    if unknown:
        raise CheckpointError(
            f"{source}: unexpected top-level entries {unknown}; expected {list(NETWORKS)} and optionally "
            f"{list(OPTIMIZERS) + list(IGNORED_ENTRIES)}"
        )
    g_ema = _state_dict(checkpoint["g_ema"], "g_ema", source)
    arch = infer_architecture(g_ema, source, lr_mlp=lr_mlp)
    generator = generator_from_architecture(arch)
    variables = {"g_ema": convert_generator(g_ema, generator, source=source, name="g_ema")}
    models = {"g": generator, "d": discriminator_from_architecture(arch)}
    state_dicts = {}
    if "g" in checkpoint:
        state_dicts["g"] = _state_dict(checkpoint["g"], "g", source)
        variables["g"] = convert_generator(state_dicts["g"], generator, source=source, name="g")
    if "d" in checkpoint:
        state_dicts["d"] = _state_dict(checkpoint["d"], "d", source)
        variables["d"] = convert_discriminator(state_dicts["d"], models["d"], source=source)
    optimizers = {}
    for name, net in OPTIMIZERS.items():
        if name not in checkpoint:
            continue
        if net not in state_dicts:  # unusable without its network; the networks themselves still convert
            _log.warning("%s: ignoring %r: the file has no %r network for it to belong to", source, name, net)
            continue
        variables[name], optimizers[name] = convert_adam_state(
            checkpoint[name], state_dicts[net], models[net], source=source, name=name)
    networks = sorted(k for k in variables if k not in OPTIMIZERS)
    architecture = {**arch, "networks": networks, **({"optimizers": optimizers} if optimizers else {})}
    return registry.ConvertedModel(kind=KIND, params=variables, architecture=architecture)


def _matches(checkpoint: Any) -> bool:
    return (
        isinstance(checkpoint, Mapping)
        and isinstance(checkpoint.get("g_ema"), Mapping)
        and "style.1.weight" in checkpoint["g_ema"]
    )


registry.register(
    registry.Converter(
        kind=KIND,
        description="rosinality StyleGAN2 checkpoint (.pt with g_ema [, g, d, optimisers]), e.g. lhq-220000.pt",
        matches=_matches,
        convert=convert_checkpoint,
    )
)
