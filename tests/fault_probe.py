"""Test-only callbacks that inject faults at a chosen step, through the real mechanism.

Added with ``+callbacks.fault._target_=fault_probe.<Name>``: the fault happens where the
test says, not where a timer happens to land, so the tests assert without timing.

- :class:`SigtermAt` sends this process a real SIGTERM after training step ``step``
  (Lightning's handler, the loops' SIGTERMException and the resume save all run as for
  a `kill` from outside); rank 0 only, as a scheduler pre-empting one host would.
- :class:`PoisonAt` fills step ``step``'s input batch with NaN, so that
  step's loss is not finite (what a diverging run or a corrupt batch produces).
"""

from __future__ import annotations

import os
import signal

import lightning as L


class SigtermAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.global_rank == 0:
            os.kill(os.getpid(), signal.SIGTERM)


class PoisonAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch["image"].fill_(float("nan"))  # the batch, not the weights: the step's loss goes NaN
