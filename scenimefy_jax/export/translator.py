"""What is exported and where it goes: the translator's generator, read from any checkpoint form.

The exported function is the bare network of docs/reference.md §1.2: `[B, H, W, 3]` float32 in [-1, 1]
-> `[B, H, W, 3]` float32 in [-1, 1], NHWC, H and W multiples of 4 and at least 8. The test-time
processing around it (docs/reference.md §1.7: base-4 bicubic resize, uint8 -> [-1, 1], clamp and
truncating uint8 cast) stays with the caller, as `Translator` does it in Python; docs/export.md spells
it out for users of the exported files.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import numpy as np

from scenimefy_jax.data import atomic

FORMATS = ("orbax", "onnx", "jax_export")
"""`orbax`: the package's model directory (`model_io.save_model`); `onnx`: an ONNX file (jax2onnx);
`jax_export`: serialized `jax.export` StableHLO."""

KIND = "translator"


class ExportError(ValueError):
    """An export that cannot be done as asked: unknown format, existing output, a missing optional
    package, a fixed size that is not a multiple of 4. The message names the file or option."""


@dataclasses.dataclass(frozen=True)
class LoadedTranslator:
    """A translator generator as read from a checkpoint: host numpy parameters, the `ResnetGenerator`
    arguments, and where it came from (recorded in an `orbax` export's metadata)."""

    params: Any
    architecture: dict
    source: dict

    def model_kwargs(self) -> dict:
        return {k: v for k, v in self.architecture.items() if k != "model"}


def load_translator(checkpoint: str | os.PathLike) -> LoadedTranslator:
    """Reads the two forms `Translator.from_checkpoint` accepts, with the same loaders: a model directory
    (`model_io.load_model`, kind "translator") or an official `*_net_G.pth` (the converter).

    Raises `CheckpointError` (missing, corrupt or another kind of file) or `ValueError` (a directory that
    is not a translator model), each naming the path.
    """
    from scenimefy_jax import convert, model_io

    path = os.fspath(checkpoint)
    if os.path.isdir(path):
        saved = model_io.load_model(path, expected_kind=KIND)
        # Keep the provenance of the file the directory was converted from (its SHA-256 names the weights).
        source = dict(saved.metadata.get("source") or {}) or {"path": os.path.abspath(path)}
        return LoadedTranslator(saved.params, dict(saved.metadata.get("architecture") or {}), source)
    converted = convert.convert_file(path, kind=KIND)
    source = {"file": os.path.basename(path), "path": os.path.abspath(path), "sha256": convert.checkpoint_sha256(path)}
    return LoadedTranslator(converted.params, dict(converted.architecture), source)


def _load_for_export(checkpoint) -> LoadedTranslator:
    """`load_translator`, with every way a checkpoint can be unusable turned into one `ExportError`."""
    from scenimefy_jax.convert import CheckpointError

    path = os.fspath(checkpoint)
    try:
        return load_translator(path)
    except (CheckpointError, ValueError, OSError, ImportError) as e:  # missing, corrupt, another kind, no torch
        message = " ".join(line.strip() for line in str(e).splitlines())  # key lists span several lines
        raise ExportError(message if path in message else f"{path}: {message}") from e


def generator_function(loaded: LoadedTranslator) -> Callable:
    """`x [B, H, W, 3] -> G(x)`, float32, with the parameters closed over as constants, so an exported file
    is self-contained (the consumer passes images only)."""
    import jax

    from scenimefy_jax.models.translator import ResnetGenerator

    model = ResnetGenerator(**loaded.model_kwargs())
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), loaded.params)

    def generator(x):
        return model.apply({"params": params}, x)

    return generator


def parse_size(text: str | None) -> tuple[int, int] | None:
    """`"HxW"` (e.g. `"256x384"`) -> `(256, 384)`; None stays None (dynamic height and width)."""
    if text is None:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ExportError(f"--size={text!r}: expected HEIGHTxWIDTH, e.g. 256x256") from None
    check_size(height, width)
    return height, width


def check_size(height: int, width: int) -> None:
    """A fixed export size must be one the network is run at: multiples of 4, sides >= 8 (docs/reference.md §1.7)."""
    from scenimefy_jax.data.images import MIN_SIDE

    if height % 4 or width % 4 or min(height, width) < MIN_SIDE:
        raise ExportError(f"--size={height}x{width}: height and width must be multiples of 4 and at least {MIN_SIDE}")


def _shareable(source: dict) -> dict:
    """Provenance to store inside a file meant to be passed around: the checkpoint's name and SHA-256,
    not the path it had on the exporting machine."""
    return {k: v for k, v in source.items() if k != "path"}


def export_translator(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    format: str = "orbax",
    overwrite: bool = False,
    batch: int | None = None,
    size: tuple[int, int] | None = None,
    platforms: tuple[str, ...] | None = None,
) -> str:
    """Exports the translator in `checkpoint` to `out` in one of `FORMATS`; returns the absolute output path.

    `batch` and `size` fix the batch size and `(height, width)` of the `onnx` and `jax_export` files
    (default: dynamic, any batch and any multiple-of-4 size); `platforms` are the `jax_export` targets
    (default: cpu, cuda and tpu in one file). The output is written atomically and must not exist unless
    `overwrite`.
    """
    if format not in FORMATS:
        raise ExportError(f"--format={format!r}: unknown format; choose one of {', '.join(FORMATS)}")
    out = os.path.abspath(os.fspath(out))
    if os.path.lexists(out) and not overwrite:
        raise ExportError(f"{out} already exists (use --overwrite to replace it)")
    if out == os.path.abspath(os.fspath(checkpoint)):
        raise ExportError(f"{out}: the output would replace the checkpoint it is read from")
    if format != "orbax" and os.path.isdir(out):
        raise ExportError(f"{out} is a directory; --format {format} writes a file")
    if format == "orbax" and (batch is not None or size is not None):
        raise ExportError("--batch and --size apply to --format onnx and jax_export only")
    if platforms is not None:
        if format != "jax_export":
            raise ExportError("--platforms applies to --format jax_export only")
        from scenimefy_jax.export import stablehlo

        stablehlo.check_platforms(platforms)
    if size is not None:
        check_size(*size)
    if batch is not None and batch < 1:
        raise ExportError(f"--batch={batch}: must be >= 1")

    loaded = _load_for_export(checkpoint)
    if format == "orbax":
        from scenimefy_jax import model_io

        return model_io.save_model(out, kind=KIND, params=loaded.params, architecture=loaded.architecture,
                                   source=loaded.source, overwrite=overwrite)
    if format == "onnx":
        from scenimefy_jax.export import onnx_graph

        metadata = {"architecture": loaded.architecture, "source": _shareable(loaded.source)}
        data = onnx_graph.export_onnx(generator_function(loaded), batch=batch, size=size, metadata=metadata)
    else:
        from scenimefy_jax.export import stablehlo

        data = stablehlo.export_stablehlo(generator_function(loaded), batch=batch, size=size,
                                          platforms=platforms or stablehlo.PLATFORMS)
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        atomic.write_bytes(out, data)  # a reader never sees a half-written file
    except OSError as e:
        raise ExportError(f"{out}: cannot be written: {e.strerror or e}") from e
    return out
