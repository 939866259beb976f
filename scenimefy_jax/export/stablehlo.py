"""`jax.export`: the generator as serialized StableHLO, symbolic in batch, height and width.

The input is `f32[b, 4*h, 4*w, 3]`: a height or width that is not a multiple of 4 is refused when the
file is called (jax checks the shapes against the specification), as the network expects
(docs/reference.md §1.7). `h, w >= 2` (sides of at least 8): the residual blocks reflect-pad by 1 at a
quarter of the input size, which needs two samples per side (docs/reference.md §1.4), and shape
polymorphism has to be told so to lower `jnp.pad(mode="reflect")`.

One file serves several platforms: `jax.export` lowers once per platform and the module dispatches on
the platform it is called on (the calling convention of `jax.export`), so a CPU machine can write a file
that also runs on GPU and TPU.
"""
from __future__ import annotations

import importlib.util
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

PLATFORMS = ("cpu", "cuda", "tpu")
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for


def check_platforms(platforms: Sequence[str]) -> None:
    from scenimefy_jax.export.translator import ExportError

    unknown = sorted(set(platforms) - set(KNOWN_PLATFORMS))
    if unknown or not platforms:
        raise ExportError(f"--platforms={','.join(platforms)!r}: unknown or no platform; "
                          f"choose from {', '.join(KNOWN_PLATFORMS)}")


def input_spec(batch: int | None = None, size: tuple[int, int] | None = None) -> jax.ShapeDtypeStruct:
    """`[b, 4*h, 4*w, 3]` float32 with `h, w >= 2`; `batch` and `size` fix those dimensions instead."""
    dims = [str(batch) if batch else "b"]
    dims += [str(size[0]), str(size[1])] if size else ["4*h", "4*w"]
    constraints = () if size else ("h >= 2", "w >= 2")
    shape = jax.export.symbolic_shape(", ".join(dims + ["3"]), constraints=constraints)
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def export_stablehlo(
    generator: Callable,
    *,
    batch: int | None = None,
    size: tuple[int, int] | None = None,
    platforms: Sequence[str] = PLATFORMS,
) -> bytes:
    """Serialized `jax.export.Exported` of `generator` (load with `jax.export.deserialize`, run with `.call`).

    Serialization needs the `flatbuffers` package (installed with the `export` extra).
    """
    from scenimefy_jax.export.translator import ExportError

    if importlib.util.find_spec("flatbuffers") is None:  # jax imports it inside serialize()
        raise ExportError("--format jax_export needs the flatbuffers package: pip install -e '.[export]'")
    check_platforms(platforms)
    exported = jax.export.export(jax.jit(generator), platforms=tuple(platforms))(input_spec(batch, size))
    return bytes(exported.serialize())
