"""Portable export of the translator generator (docs/export.md).

    from scenimefy_jax.export import export_translator
    export_translator("Shinkai_net_G.pth", "shinkai.onnx", format="onnx")        # onnxruntime
    export_translator("Shinkai_net_G.pth", "shinkai.jax", format="jax_export")   # jax.export StableHLO
    export_translator("Shinkai_net_G.pth", "models/shinkai", format="orbax")     # a model directory

`translator` loads the checkpoint and builds the function that is exported; `onnx_graph` and
`stablehlo` turn it into an ONNX file and a serialized `jax.export` module. `tools/export_translator.py`
is the command line.
"""
from scenimefy_jax.export.translator import (
    FORMATS,
    ExportError,
    LoadedTranslator,
    export_translator,
    generator_function,
    load_translator,
    parse_size,
)

__all__ = [
    "FORMATS",
    "ExportError",
    "LoadedTranslator",
    "export_translator",
    "generator_function",
    "load_translator",
    "parse_size",
]
