"""Test-only callbacks that inject faults at a chosen step, through the real mechanism.

Added with ``+callbacks.fault._target_=helpers.fault_probe.<Name>``: the fault happens where the
test says, not where a timer happens to land, so the tests assert without timing.

- :class:`SigtermAt` sends this process a real SIGTERM after training step ``step``
  (Lightning's handler, the loops' SIGTERMException and the resume save all run as for
  a `kill` from outside); rank 0 only, as a scheduler pre-empting one host would.
- :class:`KillAt` SIGKILLs one rank after step ``step`` (a dead rank).
- :class:`PoisonAt` fills step ``step``'s input batch with NaN, so that
  step's loss is not finite (what a diverging run or a corrupt batch produces).
"""

from __future__ import annotations

import os
import signal
import time

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


class KillAt(L.Callback):
    """SIGKILL to rank ``rank`` after training step ``step``: a rank that dies without a word (OOM killer, a lost host).

    Every rank writes its pid to ``pid_dir`` when training starts, so a test can watch the survivors.
    """

    def __init__(self, step: int, rank: int, pid_dir: str | None = None) -> None:
        self.step, self.rank, self.pid_dir = step, rank, pid_dir

    def on_train_start(self, trainer, pl_module) -> None:
        if self.pid_dir:
            os.makedirs(self.pid_dir, exist_ok=True)
            with open(os.path.join(self.pid_dir, f"rank{trainer.global_rank}.pid"), "w") as fh:
                fh.write(str(os.getpid()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            if self.pid_dir:  # when, for measuring how long the survivors take
                with open(os.path.join(self.pid_dir, "killed_at"), "w") as fh:
                    fh.write(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
