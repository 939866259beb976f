"""Training of the translator (semi-supervised CUT, SPEC §2): the step lives in `i2i_step`."""
from scenimefy_jax.training.i2i_step import (
    NETWORKS,
    EpochSchedule,
    I2IHParams,
    PatchIds,
    TrainState,
    create_train_state,
    draw_patch_ids,
    make_train_step,
    train_step,
)

__all__ = [
    "NETWORKS",
    "EpochSchedule",
    "I2IHParams",
    "PatchIds",
    "TrainState",
    "create_train_state",
    "draw_patch_ids",
    "make_train_step",
    "train_step",
]
