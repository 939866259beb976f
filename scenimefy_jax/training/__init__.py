"""Training: the semi-supervised translation step (`i2i_step`) and job (`i2i`), the StyleGAN2
fine-tuning step and job (`stylegan_step`, `stylegan_finetune`), and the machinery they share
(`mesh`, `checkpointing`, `metrics`, `loop`).

Nothing is imported here eagerly, so `scenimefy_jax.training.mesh` (also used by inference) stays
light; import the submodule you need.
"""
