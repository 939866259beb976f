"""scenimefy-jax: a JAX/Flax reimplementation of Scenimefy (ICCV 2023)."""

__version__ = "0.1.0"
