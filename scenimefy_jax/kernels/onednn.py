"""oneDNN's convolution kernel gradient inside XLA:CPU, as an FFI custom call.

XLA:CPU computes a convolution's kernel gradient 2-4.5x slower than PyTorch, whose CPU build calls
oneDNN; its GEMMs are slower too, so the per-tap products of `layers.conv2d` close only part of the
gap (docs/performance.md). This module compiles `conv_wgrad.cc`, a small XLA FFI handler that runs
oneDNN's `convolution_backward_weights` on the NHWC arrays in place, and registers it with JAX.

It is optional. It needs the oneDNN wheels of `requirements.txt` (`onednn-cpu-gomp` with its headers,
`onednn-devel-cpu-gomp`; Linux x86-64) and a C++17 compiler (`$CXX`, else `g++` or `c++`) the first
time; the built library is cached under `$SCENIMEFY_JAX_KERNEL_CACHE` (default
`~/.cache/scenimefy_jax/kernels`), keyed by the source, jaxlib and oneDNN. Where any of this is
missing, `available()` is False, `status()` says why, and `conv2d` keeps its other kernel gradients.
`SCENIMEFY_JAX_ONEDNN=0` switches it off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = Path(__file__).with_name("conv_wgrad.cc")
TARGET = "scenimefy_conv_wgrad"
_LIBRARY = "libdnnl.so.3"


def _prefixes() -> list[Path]:
    """Where pip puts the oneDNN wheels' `data` files: the environment's prefix (a venv), the base
    interpreter's, the user base; `$SCENIMEFY_JAX_ONEDNN_ROOT` first when set."""
    roots = [os.environ.get("SCENIMEFY_JAX_ONEDNN_ROOT"), sys.prefix, sys.base_prefix]
    try:
        import site

        roots.append(site.getuserbase())
    except (ImportError, AttributeError):
        pass
    seen, out = set(), []
    for root in roots:
        if root and root not in seen:
            seen.add(root)
            out.append(Path(root))
    return out


def find_onednn() -> tuple[Path, Path] | None:
    """(include directory, `libdnnl.so.3`) of an installed oneDNN, or None."""
    for root in _prefixes():
        header, lib = root / "include" / "oneapi" / "dnnl" / "dnnl.hpp", root / "lib" / _LIBRARY
        if header.is_file() and lib.is_file():
            return root / "include", lib
    return None


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "scenimefy_jax" / "kernels"
    return Path(os.environ.get("SCENIMEFY_JAX_KERNEL_CACHE", default))


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def build(include: Path, lib: Path, compiler: str, out_dir: Path) -> Path:
    """Compile the handler into `out_dir` (once per source, jaxlib, oneDNN and compiler) and return
    the shared library. The file appears under its final name only when complete (temp then rename),
    so concurrent first uses and a killed build never leave a broken library behind."""
    jax_include = Path(jax.ffi.include_dir())
    flags = ["-O2", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{jax_include}", f"-I{include}"]
    link = [f"-L{lib.parent}", f"-l:{_LIBRARY}", f"-Wl,-rpath,{lib.parent}"]
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), jax.__version__.encode(), jax.lib.__version__.encode(),
                 str(lib.resolve()).encode(), compiler.encode(), " ".join(flags + link).encode()):
        key.update(part)
        key.update(b"\0")
    target = out_dir / f"conv_wgrad-{key.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".conv_wgrad-", suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        run = subprocess.run([compiler, *flags, str(SOURCE), "-o", tmp, *link],
                             capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"{compiler} failed on {SOURCE.name} (exit {run.returncode}): {last}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.cache
def status() -> tuple[bool, str]:
    """(available, why): whether the oneDNN kernel gradient is registered with JAX, and the reason
    when it is not. Decided once per process; a failed build warns once and falls back."""
    if os.environ.get("SCENIMEFY_JAX_ONEDNN", "1") == "0":
        return False, "switched off by SCENIMEFY_JAX_ONEDNN=0"
    if not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"):
        return False, "the oneDNN wheels exist for Linux x86-64 only"
    found = find_onednn()
    if found is None:
        return False, "oneDNN is not installed (pip install onednn-cpu-gomp onednn-devel-cpu-gomp)"
    compiler = _compiler()
    if compiler is None:
        return False, "no C++ compiler (set $CXX or install g++)"
    try:
        path = build(*found, compiler, cache_dir())
        handler = ctypes.CDLL(str(path)).ScenimefyConvWgrad
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler), platform="cpu")
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        warnings.warn(f"scenimefy_jax: oneDNN kernel gradient unavailable, using the tap GEMMs: {err}",
                      RuntimeWarning, stacklevel=2)
        return False, str(err)
    return True, f"built {path}"


def available() -> bool:
    return status()[0]


def conv_wgrad(x: jax.Array, dy: jax.Array, kernel_hw: tuple[int, int], padding, stride) -> jax.Array:
    """Kernel gradient `[kh, kw, C_in, C_out]` of the NHWC x HWIO convolution of `x` `[B, H, W, C_in]`
    with zero padding `((top, bottom), (left, right))` and window `stride`, at output cotangent `dy`
    `[B, H_out, W_out, C_out]`; float32, summed over the batch. First order only: `layers.conv2d`
    wraps it with its derivative. Raises RuntimeError where the kernel is not `available()`."""
    if not available():
        raise RuntimeError(f"oneDNN kernel gradient unavailable: {status()[1]}")
    (pt, pb), (pl, pr) = padding
    (kh, kw), (sh, sw) = kernel_hw, stride
    out = jax.ShapeDtypeStruct((kh, kw, x.shape[3], dy.shape[3]), jnp.float32)
    call = jax.ffi.ffi_call(TARGET, out, vmap_method="sequential")
    return call(x.astype(jnp.float32), dy.astype(jnp.float32),
                stride_h=np.int64(sh), stride_w=np.int64(sw), pad_top=np.int64(pt),
                pad_bottom=np.int64(pb), pad_left=np.int64(pl), pad_right=np.int64(pr))
