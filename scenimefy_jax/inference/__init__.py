"""Inference: `Translator` turns photos into anime scenes (API), `cli` is the translate job."""
from scenimefy_jax.inference.translator import Translator

__all__ = ["Translator"]
