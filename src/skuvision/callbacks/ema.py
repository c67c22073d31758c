"""An exponential moving average of the weights, which is what validation, checkpoints and the test see.

A short fine-tune on a few thousand photos moves val top-1 by several points from one epoch to the
next (the schedule's noise, not learning); the average of the last ~``1 / (1 - decay)`` steps is
steadier, and the best checkpoint is picked on it. Lightning's ``EMAWeightAveraging`` does the
averaging, the swap around validation and the checkpoint layout (``state_dict`` = the average,
``current_model_state`` = the raw weights, for resuming).

One change: outside fit, in the trainer that just fitted (``trainer.test(ckpt_path=best)`` as
``skuvision.train`` does), the parent loads the checkpoint's raw weights over the averaged ones
just restored; its swap around validation puts the average back for ``trainer.validate``, but
nothing does for the test, which would score weights validation never saw. Here a checkpoint
loaded outside fit keeps its ``state_dict`` (the average), so nothing is swapped outside fit either.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from skuvision.errors import ConfigError


class WeightEMA(EMAWeightAveraging):
    """EMA of every parameter and buffer after each optimiser step (``decay`` per step)."""

    def __init__(self, decay: float = 0.99, update_starting_at_step: int | None = None):
        if not 0.0 < float(decay) < 1.0:
            raise ConfigError(f"callbacks.ema.decay={decay}: must be in (0, 1), e.g. 0.99 (an average over ~100 steps)")
        super().__init__(decay=float(decay), update_starting_at_step=update_starting_at_step)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if _fitting(trainer):  # resuming: raw weights to train on, the average beside them
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if _fitting(trainer):
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if _fitting(trainer):
            super().on_validation_epoch_end(trainer, pl_module)


def _fitting(trainer) -> bool:
    return trainer.state.fn == TrainerFn.FITTING
