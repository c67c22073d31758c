"""Keep ``last.ckpt`` in the checkpoint dir fresh enough to resume a stopped job (spot interruptions).

SageMaker syncs the checkpoint dir to S3 while the job runs and restores it when
a spot job restarts; ``ckpt_path=auto`` then resumes from ``last.ckpt``. Lightning's
``ModelCheckpoint(save_last=True)`` refreshes ``last.ckpt`` only when it saves a
top-k checkpoint, i.e. not in an epoch whose metric did not improve, so a restart
could repeat epochs. This callback writes ``last.ckpt``:

- after every training epoch (after its validation);
- every ``every_n_train_steps`` steps, if set (bounds the work lost to a hard kill);
- on SIGTERM, mid-epoch: SageMaker sends it to every process of a spot job two
  minutes before the kill. Lightning turns it into a ``SIGTERMException`` raised
  on all ranks at the same step (rank 0's flag is broadcast each step), so the
  save, a collective, is reached by every rank together. The checkpoint holds
  the loop and litdata loader state, so the restart continues mid-epoch.

Other exceptions save nothing: a failure on one rank would leave the others
waiting in the save's barrier. Every trigger fires on all ranks at the same step
without extra communication, which keeps this within SMDDP's collectives.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)


class ResumeCheckpoint(L.Callback):
    def __init__(self, dirpath: str, filename: str = "last.ckpt", every_n_train_steps: int | None = None) -> None:
        self.path = Path(dirpath) / filename
        self.every_n_train_steps = every_n_train_steps or 0

    def _save(self, trainer: L.Trainer, why: str) -> None:
        trainer.save_checkpoint(str(self.path))
        if trainer.is_global_zero:
            log.info("%s: saved %s (epoch %d, step %d)", why, self.path, trainer.current_epoch, trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_train_steps and trainer.global_step and trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer, f"every {self.every_n_train_steps} steps")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._save(trainer, "epoch end")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            self._save(trainer, "SIGTERM; a restart with ckpt_path=auto resumes here")
