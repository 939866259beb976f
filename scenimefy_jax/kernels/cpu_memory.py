"""Keep the memory of one XLA:CPU execution for the next (docs/performance.md, "Page faults").

XLA:CPU allocates an execution's temporaries as one block (1.0 GiB for the 128x128 training step,
3.2 GiB at 256x256) and frees it at the end. glibc serves blocks that large with `mmap` and gives them
back with `munmap`, so every step maps a gigabyte afresh: ~215,000 page faults a step, 0.4 s of system
time when steps run back to back, and 1-7 s when anything runs between two steps (a PyTorch
iteration, data loading, a pause) on a virtual machine that hands freed pages back to its host.

`keep_freed_memory()` makes glibc serve large blocks from its main heap and never shrink it
(`mallopt(M_MMAP_MAX, 0)`, `mallopt(M_TRIM_THRESHOLD, -1)`), and makes single-device JAX CPU
executions run on the calling thread (`jax_cpu_enable_async_dispatch=False`), the thread whose
allocations come from that heap (others use their own arenas, which fall back to `mmap`). The
second step on reuses the first one's pages: no faults. The price: the process keeps its peak heap
until it exits. `main` calls it before any job touches a device; `SCENIMEFY_JAX_KEEP_CPU_MEMORY=0`
switches it off. The async-dispatch part takes effect only before JAX's backends start.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc <malloc.h>


def keep_freed_memory() -> dict:
    """Apply the settings above where possible; returns what was done, for logs and benchmark JSON."""
    if os.environ.get("SCENIMEFY_JAX_KEEP_CPU_MEMORY", "1") == "0":
        return {"applied": False, "why": "switched off by SCENIMEFY_JAX_KEEP_CPU_MEMORY=0"}
    if not sys.platform.startswith("linux"):
        return {"applied": False, "why": "glibc's mallopt exists on Linux only"}
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):
        return {"applied": False, "why": "the C library is not glibc"}
    malloc_ok = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))
    from jax._src import xla_bridge

    inline = not xla_bridge.backends_are_initialized()
    if inline:
        import jax

        jax.config.update("jax_cpu_enable_async_dispatch", False)
    return {"applied": malloc_ok, "inline_cpu_dispatch": inline,
            "why": "" if inline else "JAX's backends had started: CPU dispatch stays asynchronous"}
