"""Several hosts, one JAX program per host: start-up and the few exchanges the jobs need (docs/multihost.md).

`main` calls `initialize_from_config(config.distributed)` before a job touches a device. Modes:

* `auto` (default): join a cluster if one is detected (the environments `jax.distributed` itself
  recognises: Cloud TPU pod slices, SLURM `srun`, Open MPI `mpirun`, Kubernetes/GKE TPU) or if
  `JAX_COORDINATOR_ADDRESS` is set (with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`); otherwise run as
  one process, exactly as without this module.
* `explicit`: `coordinator_address`, `num_processes` and `process_id` from the config, for clusters
  JAX does not detect (or two processes on one machine, as the tests do).
* `off`: never initialise (one host, even inside a detected cluster).

After start-up `jax.devices()` lists every device of every host and `jax.local_devices()` this host's.
Training jobs build their mesh over all devices and feed each host's rows; file-per-input jobs
(translate, segment, sample, evaluate) give each host a share of the inputs (`process_share`), run
it on the host's own devices and combine results with `gather_json` / `gather_rows`.
"""
from __future__ import annotations

import collections
import json
import logging as py_logging
import os
from typing import Any, Sequence

import numpy as np

_log = py_logging.getLogger(__name__)
MODES = ("auto", "explicit", "off")


class DistributedConfigError(ValueError):
    """A `distributed.*` option that cannot work (the message names it)."""


def config_defaults():
    """The `config.distributed` block every job config carries (an `ml_collections.ConfigDict`)."""
    import ml_collections

    c = ml_collections.ConfigDict()
    c.mode = "auto"  # auto (join a detected cluster, else one host) | explicit (the three below) | off
    c.coordinator_address = ""  # explicit: host:port of process 0, reachable from every host
    c.num_processes = 0  # explicit: how many processes (hosts) take part
    c.process_id = -1  # explicit: this process, 0 .. num_processes - 1
    c.local_device_ids = ""  # e.g. "0,1": the accelerators this process drives (default: all it sees)
    c.initialization_timeout = 300  # seconds to wait for every process to join
    return c


def _detected_cluster() -> str | None:
    """Name of the cluster environment `jax.distributed` would auto-detect here, if any.

    Uses JAX's own detectors (a private module: if it moves, detection is simply off and the explicit
    mode still works)."""
    try:
        from jax._src import clusters
    except ImportError:  # pragma: no cover - depends on the JAX version
        return None
    for env in getattr(clusters.ClusterEnv, "_cluster_types", ()):
        try:
            if not getattr(env, "opt_in_only_method", False) and env.is_env_present():
                return env.__name__
        except Exception as e:  # noqa: BLE001 - a detector that fails means "not this environment"
            _log.debug("cluster detector %s failed: %s", getattr(env, "__name__", env), e)
    return None


def _device_ids(text: str) -> list[int] | None:
    if not str(text).strip():
        return None
    try:
        return [int(v) for v in str(text).split(",")]
    except ValueError:
        raise DistributedConfigError(
            f"--config.distributed.local_device_ids={text!r}: expected comma-separated integers, e.g. 0,1") from None


def initialize(mode: str = "auto", *, coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
               local_device_ids: str | Sequence[int] = "", initialization_timeout: int = 300) -> bool:
    """Starts `jax.distributed` as `mode` says; returns True if this process is now one of several.

    Must run before anything creates a JAX backend (listing devices, placing an array). Calling it
    again after a successful start is a no-op.
    """
    import jax

    if mode not in MODES:
        raise DistributedConfigError(f"--config.distributed.mode={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "off":
        return False
    if _is_initialized():
        return jax.process_count() > 1
    ids = local_device_ids if not isinstance(local_device_ids, str) else _device_ids(local_device_ids)
    if mode == "explicit":
        missing = [name for name, bad in (("coordinator_address", not coordinator_address),
                                          ("num_processes", num_processes < 1), ("process_id", process_id < 0))
                   if bad]
        if missing:
            raise DistributedConfigError(
                "--config.distributed.mode=explicit needs " + ", ".join(f"--config.distributed.{m}" for m in missing))
        if process_id >= num_processes:
            raise DistributedConfigError(f"--config.distributed.process_id={process_id} must be below "
                                         f"--config.distributed.num_processes={num_processes}")
        args = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
        origin = f"explicit, coordinator {coordinator_address}"
    else:
        env_address = os.environ.get("JAX_COORDINATOR_ADDRESS")
        cluster = None if env_address else _detected_cluster()
        if not env_address and cluster is None:
            return False  # one host
        args = {}
        if env_address:
            try:
                args = dict(num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                            process_id=int(os.environ["JAX_PROCESS_ID"]))
            except (KeyError, ValueError):
                raise DistributedConfigError(
                    "JAX_COORDINATOR_ADDRESS is set: JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers too "
                    "(or use --config.distributed.mode=explicit / off)") from None
        origin = f"coordinator {env_address} from the environment" if env_address else f"detected {cluster}"
    if ids is not None:
        args["local_device_ids"] = ids
    # Cross-process collectives of the CPU backend (tests, CPU clusters) need an implementation; the
    # accelerator backends ignore this option.
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    _log.info("jax.distributed: joining (%s); waiting up to %d s for every process "
              "(--config.distributed.mode=off for one host)", origin, initialization_timeout)
    jax.distributed.initialize(initialization_timeout=int(initialization_timeout), **args)
    _log.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
              jax.process_count(), jax.local_device_count(), jax.device_count())
    return jax.process_count() > 1


def initialize_from_config(config) -> bool:
    """`initialize` with the options of a `config.distributed` block (None: the defaults)."""
    c = config if config is not None else config_defaults()
    return initialize(
        str(c.get("mode", "auto")), coordinator_address=str(c.get("coordinator_address", "")),
        num_processes=int(c.get("num_processes", 0)), process_id=int(c.get("process_id", -1)),
        local_device_ids=str(c.get("local_device_ids", "")),
        initialization_timeout=int(c.get("initialization_timeout", 300)))


def _client():
    """The coordination service client of `jax.distributed` (None before start-up)."""
    try:
        from jax._src import distributed as jax_distributed

        return jax_distributed.global_state.client
    except (ImportError, AttributeError):  # pragma: no cover - depends on the JAX version
        return None


def _is_initialized() -> bool:
    return _client() is not None


def is_writer() -> bool:
    """Whether this process writes the shared files (summaries, exports, logs): process 0."""
    import jax

    return jax.process_index() == 0


def process_share(items: Sequence[Any]) -> list[Any]:
    """This process's share of `items`: every `process_count`-th one, starting at its index.

    Interleaving (not contiguous blocks) balances hosts when item costs drift along the list."""
    import jax

    return list(items[jax.process_index()::jax.process_count()])


# Exchanges go through the coordination service's key-value store, not device collectives: hosts reach
# them at different times (unequal shares of inputs, compilation on busy hosts), and the store waits as
# long as `EXCHANGE_TIMEOUT_S`, where the CPU backend's collectives give up after 30 s.
EXCHANGE_TIMEOUT_S = 3600
_calls: collections.Counter = collections.Counter()  # per name: keys and barrier ids are used once


def _once(name: str) -> str:
    """`name` made unique to this call; every process calls in the same order, so they agree."""
    _calls[name] += 1
    return f"{name}/{_calls[name]}"


def _exchange(data: bytes) -> list[bytes]:
    """Every process's `data`, in process order (each process must call this the same number of times)."""
    import jax

    key = _once("scenimefy_jax/exchange")
    client = _client()
    client.key_value_set_bytes(f"{key}/{jax.process_index()}", data)
    values = [client.blocking_key_value_get_bytes(f"{key}/{p}", EXCHANGE_TIMEOUT_S * 1000)
              for p in range(jax.process_count())]
    barrier(f"{key}/read")  # everyone has read: the keys can go
    if is_writer():
        for p in range(jax.process_count()):
            client.key_value_delete(f"{key}/{p}")
    return values


def gather_rows(rows: np.ndarray) -> np.ndarray:
    """Concatenates every process's `[n_p, ...]` rows (n_p may differ) in process order, on every process."""
    import io

    import jax

    rows = np.asarray(rows)
    if jax.process_count() == 1:
        return rows
    buffer = io.BytesIO()
    np.save(buffer, rows, allow_pickle=False)
    parts = [np.load(io.BytesIO(b), allow_pickle=False) for b in _exchange(buffer.getvalue())]
    return np.concatenate(parts)


def gather_json(value: Any) -> list[Any]:
    """Every process's JSON-serialisable `value`, as a list in process order, on every process."""
    import jax

    if jax.process_count() == 1:
        return [value]
    return [json.loads(b.decode()) for b in _exchange(json.dumps(value).encode())]


def barrier(name: str, timeout_s: float = EXCHANGE_TIMEOUT_S) -> None:
    """Waits until every process reached the barrier `name` (no-op on one process); may be called again
    with the same name."""
    import jax

    if jax.process_count() > 1:
        _client().wait_at_barrier(_once(name), int(timeout_s * 1000))
