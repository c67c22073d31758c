"""Keep ``last.ckpt`` the newest state of the run, in every environment, and resume it exactly.

Lightning's ``save_last`` refreshes it only with a new top-k checkpoint, so this callback is its one
writer: after every epoch, every ``every_n_train_steps`` steps, and on SIGTERM mid-epoch (a spot
job's notice; Lightning raises it on all ranks at the same step, so the save, a collective, is
reached together). Other exceptions save nothing: the other ranks would wait in the barrier.
The checkpoint carries the random states, put back at the first batch after a restore (the
restarted run does things in between that the uninterrupted one did not); loader workers need
none, as each sample's augmentation is seeded by (seed, epoch, index). Non-finite weights are
never saved: a NaN in ``last.ckpt`` would be resumed from forever.
"""

from __future__ import annotations

import logging
import random
import signal
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from skuvision.checkpoints import check_writable
from skuvision.errors import UserError

log = logging.getLogger(__name__)


class NonFiniteWeights(UserError):
    """Weights went NaN/inf; nothing is saved over the last good checkpoint."""


def rng_state() -> dict[str, Any]:
    """The process's random states as tensors and plain values: loadable with ``weights_only=True``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(tuple(state["python"]) if not isinstance(state["python"], tuple) else state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _finite(module: torch.nn.Module) -> bool:
    tensors = [p.detach() for p in module.parameters()] + [b for b in module.buffers() if b.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class ResumeCheckpoint(L.Callback):
    def __init__(self, dirpath: str, filename: str = "last.ckpt", every_n_train_steps: int | None = None) -> None:
        self.path = Path(dirpath) / filename
        self.every_n_train_steps = every_n_train_steps or 0
        self._pending_rng: dict[str, Any] | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Before the first step: a checkpoint dir that cannot be written is one line now, not after an epoch."""
        if stage == "fit":
            check_writable(self.path.parent, "callbacks.resume_checkpoint.dirpath")

    def _save(self, trainer: L.Trainer, why: str) -> None:
        if not _finite(trainer.lightning_module):  # same weights on every rank: all ranks raise together
            raise NonFiniteWeights(
                f"weights are not finite at step {trainer.global_step} (epoch {trainer.current_epoch}); "
                f"not saving over {self.path}, which holds the last good state"
            )
        # the full state, said explicitly: left unset, Lightning 2.6 logs "weights_only was not set" at every save
        trainer.save_checkpoint(str(self.path), weights_only=False)
        if trainer.is_global_zero:
            log.info("%s: saved %s (epoch %d, step %d)", why, self.path, trainer.current_epoch, trainer.global_step)

    # -- random states ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_rng = state_dict.get("rng")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None

    # -- SIGTERM on several ranks -----------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        """With several ranks: a SIGTERM only marks this process; the ranks agree at a step's end.

        (Here, not in ``on_fit_start``: Lightning installs its own handler after that hook.)

        Lightning's own handler broadcasts from inside the signal handler and each rank also
        checks its local flag after every step, so ranks signalled a moment apart stopped at
        different steps and met in mismatched collectives (rank 0 in the save's barrier, rank 1
        in the next step: "Connection closed by peer"). Here every rank issues one broadcast of
        rank 0's mark at the same hook (``on_train_batch_end``) and all stop after that step.
        """
        self._sigterm = False
        if trainer.world_size > 1:
            signal.signal(signal.SIGTERM, self._mark_sigterm)

    def _mark_sigterm(self, signum, frame) -> None:
        self._sigterm = True

    def _agree_on_sigterm(self, trainer) -> None:
        if trainer.world_size > 1:
            flag = torch.tensor([1 if getattr(self, "_sigterm", False) else 0], device=trainer.strategy.root_device)
            torch.distributed.broadcast(flag, src=0)
            if flag.item():
                trainer._signal_connector.received_sigterm = True  # the loop raises SIGTERMException after this step

    # -- triggers --------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._agree_on_sigterm(trainer)
        if self.every_n_train_steps and trainer.global_step and trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer, f"every {self.every_n_train_steps} steps")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        _close_resumed_epoch(trainer)
        if not trainer.sanity_checking:
            self._save(trainer, "epoch end")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            self._save(trainer, "SIGTERM; ckpt_path=last (locally) or auto (SageMaker) resumes here")


def _close_resumed_epoch(trainer) -> None:
    """Let the train loader start a fresh epoch after an epoch resumed mid-way.

    litdata's ``StreamingDataLoader.load_state_dict`` sets ``restore`` and clears it only when its
    iterator runs to exhaustion; Lightning stops at the loader's length instead, so the flag
    survived into the next epoch, which then did not reset or advance the loader's epoch and
    came up short (a resumed 3-epoch run ended at step 48 of 72). At an epoch's end the next
    ``iter()`` must begin a new epoch, which is what ``restore = False`` means to litdata.
    """
    loader = trainer.train_dataloader
    loaders = loader.values() if isinstance(loader, dict) else loader if isinstance(loader, (list, tuple)) else [loader]
    for each in loaders:
        if getattr(each, "restore", False):
            each.restore = False
