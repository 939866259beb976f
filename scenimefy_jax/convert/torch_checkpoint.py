"""Reading published PyTorch checkpoints safely, and the checks every converter shares.

torch is an optional dependency (`pip install -e .[torch]`); it is imported only when a `.pth`/`.pt`
file is actually read. Files are always opened with `weights_only=True`, so a checkpoint can never
run code on the user's machine.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pickle
from typing import Any, Mapping

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not match the architecture it claims."""


class CheckpointMismatchError(CheckpointError):
    """Key set or shapes differ from the expected architecture; the message lists every difference."""

    def __init__(self, source: str, kind: str, missing, unexpected, misshaped):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.misshaped = sorted(misshaped)
        lines = [f"{source}: does not match the {kind!r} architecture."]
        if self.missing:
            lines.append(f"  missing keys ({len(self.missing)}): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append(f"  unexpected keys ({len(self.unexpected)}): " + ", ".join(self.unexpected))
        if self.misshaped:
            lines.append(
                f"  wrong shapes ({len(self.misshaped)}): "
                + ", ".join(f"{k} is {tuple(got)}, expected {tuple(want)}" for k, got, want in self.misshaped)
            )
        super().__init__("\n".join(lines))


def _import_torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading a PyTorch checkpoint needs torch: pip install -e '.[torch]' (CPU torch==2.13.0)."
        ) from e
    return torch


def _to_numpy(obj: Any) -> Any:
    torch = _import_torch()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().float().numpy() if obj.is_floating_point() else obj.cpu().numpy()
    if isinstance(obj, Mapping):
        return {k: _to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(v) for v in obj)
    return obj


def load_torch_checkpoint(path: str | os.PathLike) -> Any:
    """Loads a `.pth`/`.pt` file with `weights_only=True`; tensors come back as numpy arrays.

    Raises `CheckpointError` naming the file when it is missing, truncated, not a PyTorch file, or
    holds objects that a weights-only load refuses.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    torch = _import_torch()
    try:
        # rosinality StyleGAN2 checkpoints store their training `args` as an argparse.Namespace (plain
        # attributes, no code); allow exactly that class on top of the weights-only defaults.
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        if isinstance(e, pickle.UnpicklingError) and "weights only" in str(e).lower():
            # torch's message goes on to suggest weights_only=False, which would run the file's code.
            raise CheckpointError(
                f"{path}: holds Python objects other than tensors and plain containers, so it is refused "
                "(checkpoints are read with torch.load(weights_only=True) only, never unpickled with code)") from e
        first = str(e).split(". ")[0].splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint (truncated, corrupt, or not a checkpoint): "
            f"{type(e).__name__}: {first}") from e
    return _to_numpy(raw)


def flat_arrays(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Flattens nested dicts of arrays to `{"a.b.c": array}`; non-array leaves are dropped."""
    out: dict[str, np.ndarray] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flat_arrays(v, f"{prefix}{k}."))
    elif isinstance(obj, np.ndarray):
        out[prefix[:-1]] = obj
    return out


def check_state_dict(
    state_dict: Mapping[str, np.ndarray],
    expected_shapes: Mapping[str, tuple[int, ...]],
    *,
    source: str,
    kind: str,
) -> None:
    """Raises `CheckpointMismatchError` unless keys and shapes match `expected_shapes` exactly."""
    got = set(state_dict)
    want = set(expected_shapes)
    misshaped = [
        (k, np.shape(state_dict[k]), expected_shapes[k])
        for k in got & want
        if tuple(np.shape(state_dict[k])) != tuple(expected_shapes[k])
    ]
    if got != want or misshaped:
        raise CheckpointMismatchError(source, kind, want - got, got - want, misshaped)


def check_fixed_buffer(value: np.ndarray, expected: np.ndarray, *, key: str, source: str) -> None:
    """Fixed (non-learned) buffers such as blur filters must hold their closed-form values."""
    if not np.allclose(value, expected, rtol=0, atol=1e-6):
        raise CheckpointError(
            f"{source}: buffer {key} differs from the fixed filter this architecture uses "
            f"(max abs difference {np.max(np.abs(value - expected)):.3g}); refusing to convert."
        )


def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """PyTorch Conv2d weight `(O, I, kh, kw)` -> Flax/lax HWIO `(kh, kw, I, O)`."""
    return np.ascontiguousarray(np.transpose(weight, (2, 3, 1, 0)), dtype=np.float32)


def dense_kernel(weight: np.ndarray) -> np.ndarray:
    """PyTorch Linear weight `(out, in)` -> Flax Dense kernel `(in, out)`."""
    return np.ascontiguousarray(weight.T, dtype=np.float32)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
