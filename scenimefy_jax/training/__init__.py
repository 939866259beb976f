"""Training: the semi-supervised translation step (`i2i_step`) and job (`i2i`), the StyleGAN2
fine-tuning step and job (`stylegan_step`, `stylegan_finetune`), and the machinery they share
(`checkpointing`, `metrics`, `loop`; the device mesh is `scenimefy_jax.parallel`, shared with the
other stages).

Nothing is imported here eagerly; import the submodule you need.
"""
