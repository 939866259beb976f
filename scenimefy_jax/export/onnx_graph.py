"""ONNX through jax2onnx: the generator as an ONNX graph with dynamic batch, height and width.

The input is `photo`, `float32[batch, height, width, 3]`, the output `anime` of the same shape (written
by the converter as `4*floordiv(floordiv(height + 1, 2) + 1, 2)`, which is `height` for the multiples of
4 the network must be given, docs/reference.md §1.7; ONNX cannot state that constraint, so nothing
refuses other sizes: they come back rounded up to a multiple of 4).

jax2onnx 0.13.0 needs two work-arounds for this network, both applied only around the conversion:

* Zero-size arrays. `jnp.pad(mode="edge")` (the replicate padding of the anti-aliased Upsample,
  docs/reference.md §1.3) concatenates empty slices for the axes it does not pad. The converter writes
  their zero-size reshapes as ONNX `Reshape` without `allowzero`, where a 0 in the target shape means
  "keep this dimension", so the graph's declared shapes are wrong and onnxruntime refuses it. The
  generator is therefore traced to a jaxpr and re-evaluated without the empty operands
  (`_without_empty_arrays`): the same arithmetic, minus operations on nothing.
* Symbolic scopes. The sizes are symbolic with the constraint `height, width >= 8` (which
  `jnp.pad(mode="reflect")` needs, see `stablehlo.py`). The converter deep-copies the parameters of
  the `gather` that crops each "SAME then crop" convolution, and jax 0.10.2 cannot deep-copy a
  `SymbolicScope` with constraints once tracing has filled its bounds cache (the cache is keyed by
  dimension expressions, whose comparison needs the half-rebuilt scope: AttributeError). A copy would
  be a different scope anyway, which symbolic arithmetic refuses to mix. During the conversion a scope
  deep-copies to itself.
"""
from __future__ import annotations

import contextlib
import json
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp

INPUT_NAME = "photo"
OUTPUT_NAME = "anime"
OPSET = 23  # jax2onnx's default; onnxruntime 1.32 runs it

_EMPTY = None  # stands for a zero-size intermediate that is never built


def _is_empty(aval) -> bool:
    return any(isinstance(d, int) and d == 0 for d in aval.shape)


def _eval_without_empty(jaxpr, consts, *args) -> list:
    """Evaluates `jaxpr` like `jax.core.eval_jaxpr`, inlining nested jit / custom-derivative calls, but
    never builds a zero-size value and drops zero-size operands from `concatenate`."""
    from jax.extend.core import Literal

    env: dict = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    def materialise(value, var):
        return jnp.zeros(var.aval.shape, var.aval.dtype) if value is _EMPTY else value

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        if all(_is_empty(v.aval) for v in eqn.outvars):
            env.update((v, _EMPTY) for v in eqn.outvars)
            continue
        values = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "concatenate":
            kept = [x for x, v in zip(values, eqn.invars) if not _is_empty(v.aval)]
            outs = [kept[0] if len(kept) == 1 else jax.lax.concatenate(kept, eqn.params["dimension"])]
        elif name in ("jit", "pjit", "closed_call", "custom_jvp_call", "custom_vjp_call"):
            # Forward only: custom derivative rules do not matter to an inference graph.
            inner = eqn.params["jaxpr"] if "jaxpr" in eqn.params else eqn.params["call_jaxpr"]
            outs = _eval_without_empty(inner.jaxpr, inner.consts, *values)
        else:
            values = [materialise(x, v) for x, v in zip(values, eqn.invars)]
            outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
            if not eqn.primitive.multiple_results:
                outs = [outs]
        env.update(zip(eqn.outvars, outs))
    return [materialise(read(v), v) for v in jaxpr.outvars]


def _without_empty_arrays(fn: Callable) -> Callable:
    """`fn` of one array, re-expressed without zero-size intermediates (see the module docstring)."""

    def wrapped(x):
        closed = jax.make_jaxpr(fn)(x)
        (y,) = _eval_without_empty(closed.jaxpr, closed.consts, x)
        return y

    return wrapped


@contextlib.contextmanager
def _conversion_environment():
    """Scopes deep-copy to themselves (module docstring); the converter's and onnx_ir's chatter is
    silenced (jax2onnx 0.13.0 warns, with tracebacks, about dm_pix plugins it cannot import under this jax)."""
    scope_class = jax.export.SymbolicScope
    had_own = "__deepcopy__" in scope_class.__dict__
    previous = scope_class.__dict__.get("__deepcopy__")
    loggers = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    scope_class.__deepcopy__ = lambda self, memo: self
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        if had_own:
            scope_class.__deepcopy__ = previous
        else:
            del scope_class.__deepcopy__
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def input_spec(batch: int | None = None, size: tuple[int, int] | None = None) -> jax.ShapeDtypeStruct:
    """`[batch, height, width, 3]` float32, symbolic where not fixed, with sides >= 8.

    jax2onnx needs every symbolic input dimension to be a plain variable (it cannot take `4*h`), so
    the multiple-of-4 rule is the caller's (module docstring)."""
    dims = [str(batch) if batch else "batch"]
    dims += [str(size[0]), str(size[1])] if size else ["height", "width"]
    constraints = () if size else ("height >= 8", "width >= 8")
    shape = jax.export.symbolic_shape(", ".join(dims + ["3"]), constraints=constraints)
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def export_onnx(
    generator: Callable,
    *,
    batch: int | None = None,
    size: tuple[int, int] | None = None,
    metadata: dict[str, Any] | None = None,
) -> bytes:
    """The serialized ONNX model of `generator` (one file; weights are initializers inside it).

    `metadata` entries are stored as JSON strings in the model's `metadata_props`, next to the input
    contract."""
    from scenimefy_jax.export.translator import ExportError

    try:
        import jax2onnx
        import onnx
    except ImportError:
        raise ExportError("--format onnx needs jax2onnx and onnx: pip install -e '.[export]'") from None
    with _conversion_environment():
        model = jax2onnx.to_onnx(
            _without_empty_arrays(generator),
            inputs=[input_spec(batch, size)],
            model_name="scenimefy_translator",
            opset=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
        )
    props = {
        "input": "photo: float32 [batch, height, width, 3] NHWC in [-1, 1]; height and width multiples of 4, >= 8",
        "output": "anime: float32 [batch, height, width, 3] NHWC in [-1, 1]",
        **{key: json.dumps(value, sort_keys=True) for key, value in (metadata or {}).items()},
    }
    onnx.helper.set_model_props(model, props)
    model.doc_string = "Scenimefy translator generator (scenimefy_jax); see docs/export.md"
    return model.SerializeToString()
