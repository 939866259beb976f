"""Runs `python -m scenimefy_jax.main` as several processes on 127.0.0.1: a cluster of fake hosts.

Each process gets `devices` fake CPU devices and joins the others through `jax.distributed` (gloo CPU
collectives) with `--config.distributed.mode=explicit`, exactly as a user would launch one process per
host (docs/multihost.md).
"""
from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DEFAULT_MATMUL_PRECISION="highest",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    return env


def run_main(args: list[str], *, processes: int = 1, devices: int = 1, timeout: float = 600) -> list[Finished]:
    """`python -m scenimefy_jax.main ARGS` as `processes` processes (1: a plain single-host run)."""
    command = [sys.executable, "-m", "scenimefy_jax.main", *args]
    if processes == 1:
        launches = [command]
    else:
        address = f"127.0.0.1:{free_port()}"
        launches = [command + ["--config.distributed.mode=explicit", f"--config.distributed.coordinator_address={address}",
                               f"--config.distributed.num_processes={processes}", f"--config.distributed.process_id={i}",
                               "--config.distributed.initialization_timeout=120"]
                    for i in range(processes)]
    procs = [subprocess.Popen(c, cwd=ROOT, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in launches]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append(Finished(p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return results
