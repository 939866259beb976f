"""Run in a subprocess with 8 fake CPU devices: one update on an 8-device mesh vs a 1-device mesh.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.training.multidevice_check toy|i2i OUT.npz

Writes the updated parameters of both runs (flattened) to OUT.npz; the test compares them.
"""
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from scenimefy_jax.parallel import mesh as mesh_lib  # noqa: E402


def _task(kind):
    if kind == "toy":
        from tests.training import toy_task

        return toy_task.TASK.init_state, toy_task.TASK.train_step, {"lr_mult": 1.0}, 8
    from scenimefy_jax.training import i2i, i2i_step

    hp = i2i_step.I2IHParams(ngf=8, n_blocks=5, ndf=8, num_patches=16, netF_nc=16)
    task = i2i.I2ITask(hparams=hp, image_size=32, steps_per_epoch=10)
    return task.init_state, task.train_step, task.step_inputs(0), 32


def run(kind, devices):
    init, step, inputs, size = _task(kind)
    mesh = mesh_lib.make_mesh(devices)
    rep = mesh_lib.replicated(mesh)
    state = jax.jit(init, out_shardings=rep)(jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = {k: rng.uniform(-1, 1, (8, size, size, 3)).astype(np.float32) for k in ("x", "y", "x_p", "y_p")}
    batch = mesh_lib.shard_batch(batch, mesh)
    assert len(batch["x"].sharding.device_set) == len(devices)
    inputs = {k: np.float32(v) for k, v in inputs.items()}
    update = jax.jit(step, out_shardings=(rep, rep))
    for i in range(2):  # two updates: the second one also uses the Adam moments of the first
        state, metrics = update(state, batch, jax.random.key(i + 1), inputs)
    leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}, {k: float(v) for k, v in metrics.items()}


def main():
    kind, out = sys.argv[1], sys.argv[2]
    assert jax.device_count() == 8, jax.devices()
    many, m_metrics = run(kind, jax.devices())
    one, o_metrics = run(kind, jax.devices()[:1])
    np.savez(out, **{"8/" + k: v for k, v in many.items()}, **{"1/" + k: v for k, v in one.items()},
             **{"m8/" + k: v for k, v in m_metrics.items()}, **{"m1/" + k: v for k, v in o_metrics.items()})


if __name__ == "__main__":
    main()
