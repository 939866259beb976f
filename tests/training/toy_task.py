"""A tiny training task for testing the generic loop: a two-layer conv net mapping x -> y.

Small enough to run many steps in seconds, yet it exercises everything the loop must get right:
parameters and Adam state in the train state, a per-step PRNG key (dropout), a traced per-step
schedule value (learning-rate multiplier), batch-mean losses (so sharding the batch matters).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from scenimefy_jax.training import loop, metrics


class ToyNet(nn.Module):
    @nn.compact
    def __call__(self, x, *, rng=None):
        h = nn.relu(nn.Conv(8, (3, 3))(x))
        if rng is not None:  # dropout from the step key: resume must reproduce the key stream
            h = h * jax.random.bernoulli(rng, 0.9, h.shape) / 0.9
        return nn.Conv(3, (3, 3))(h)


class ToyState(struct.PyTreeNode):
    params: dict
    opt_state: optax.OptState
    count: jax.Array


_OPT = optax.scale_by_adam(b1=0.5, b2=0.999)


def init_state(rng):
    params = ToyNet().init(rng, jnp.zeros((1, 8, 8, 3)))["params"]
    return ToyState(params=params, opt_state=_OPT.init(params), count=jnp.zeros((), jnp.int32))


def train_step(state, batch, rng, inputs):
    def loss_fn(params):
        out = ToyNet().apply({"params": params}, batch["x"], rng=rng)
        return jnp.mean(jnp.abs(out - batch["y"])) + 0.1 * jnp.mean((out - batch["y_p"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = _OPT.update(grads, state.opt_state)
    lr = 1e-2 * inputs["lr_mult"]
    params = jax.tree_util.tree_map(lambda p, u: p - lr * u, state.params, updates)
    return state.replace(params=params, opt_state=opt_state, count=state.count + 1), {"loss": loss}


def step_inputs(step):
    return {"lr_mult": 1.0 if step < 4 else 0.5}


def make_images(state, batch):
    out = ToyNet().apply({"params": state.params}, batch["x"])
    return {"grid": metrics.image_grid([batch["x"], out, batch["y"]], max_images=2)}


def exported(state, workdir):
    np.save(f"{workdir}/exported.npy", np.asarray(state.count))


TASK = loop.TrainTask(
    init_state=init_state,
    train_step=train_step,
    step_inputs=step_inputs,
    batch_keys=("x", "y", "x_p", "y_p"),
    make_images=make_images,
    export=exported,
    param_trees=lambda s: {"toy": s.params},
)
