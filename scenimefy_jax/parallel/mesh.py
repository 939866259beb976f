"""The device mesh of the training jobs: data parallelism over every device, parameters replicated.

One place builds the mesh and the shardings; the same code runs on 1 CPU, on 8 fake CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), on one GPU, on a TPU slice, and on several
hosts (each host passes its own rows of the global batch; `jax.make_array_from_process_local_data`
assembles the global array without moving data between hosts).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis `"data"` over `devices` (default: every device of every host)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices).reshape(len(devices)), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimiser state, PRNG keys, scalars)."""
    return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis is split over the `"data"` axis; other axes are whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_global_batch(global_batch: int, mesh: Mesh) -> None:
    if global_batch % mesh.size:
        raise ValueError(
            f"global batch {global_batch} must be a multiple of the {mesh.size} devices of the mesh "
            "(each device takes an equal slice of the batch)"
        )


def padded_batch_size(n: int, limit: int, multiple: int = 1) -> int:
    """Batch size to run `n` inputs at: the next power of two (at most `max(limit, n)`), rounded up to
    a multiple of the device count. Inference pads short batches to it, so few shapes compile."""
    size = 1
    while size < n:
        size *= 2
    size = min(size, max(limit, n))
    return -(-size // multiple) * multiple


def shard_batch(local_batch: Any, mesh: Mesh) -> Any:
    """This host's rows (`[B_local, ...]` numpy leaves) -> global `[B, ...]` arrays sharded on `"data"`."""
    sharding = data_sharded(mesh)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def local_batch(x: Any, mesh: Mesh) -> jax.Array:
    """A batch this host holds in full, split on `"data"` over a mesh of this host's own devices (the
    inference networks'). With several processes jit refuses numpy inputs that have a non-trivial
    sharding; an array already placed on the local devices is what it accepts."""
    return jax.device_put(x, data_sharded(mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a host pytree (identical on every host) on every device of the mesh.

    With several processes each one passes its (identical) copy for its own devices, since
    `device_put` cannot address another host's devices; leaves must then be arrays (not PRNG keys).
    """
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def _host_value(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if not x.is_fully_replicated:
            raise ValueError(f"an array of shape {x.shape} sharded over several hosts cannot be read by one host")
        x = x.addressable_data(0)  # several hosts: this host's own copy of a replicated array
    return np.asarray(jax.device_get(x))


def host_local(tree: Any) -> Any:
    """`tree` in a form this host's own computations can take: unchanged on one host; on several, this
    host's copy of each replicated array (as numpy). A jit over the global mesh would treat this host's
    other inputs as identical on every host, which a host's own rows are not."""
    return tree if jax.process_count() == 1 else to_host(tree)


def to_host(tree: Any) -> Any:
    """Fetches a pytree of replicated (or fully addressable) arrays as numpy, on one host or several."""
    return jax.tree_util.tree_map(_host_value, tree)

