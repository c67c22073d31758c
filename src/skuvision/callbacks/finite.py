"""Stop at the first non-finite loss or gradient, before the optimiser applies it.

A NaN that reaches the weights is silent: every later step, validation and checkpoint
carries it, and ``last.ckpt`` would be resumed from forever. The check runs after
backward and before ``optimizer.step`` (Lightning's ``on_before_optimizer_step``), so
the weights are those of the last good step. Under DDP the gradients are already
all-reduced there, so a NaN on any rank shows in the gradients on every rank and all
ranks stop at the same step without a collective of their own (see
:mod:`skuvision.distributed`).

With ``16-mixed`` precision the GradScaler skips steps with inf gradients on purpose;
only then is the gradient check left to the scaler.
"""

from __future__ import annotations

import lightning as L
import torch

from skuvision.callbacks.resume import ResumeCheckpoint
from skuvision.errors import UserError


class NonFiniteLoss(UserError):
    """The training loss or its gradients are NaN/inf; the weights were not updated."""


class StopOnNonFinite(L.Callback):
    def __init__(self) -> None:
        self._loss: torch.Tensor | None = None
        self._batch_idx = -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        loss_ok = self._loss is None or bool(torch.isfinite(self._loss).all())
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        scaler = str(trainer.precision).startswith("16")
        grads_ok = scaler or not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
        if loss_ok and grads_ok:
            return
        what = f"loss is {float(self._loss):g}" if not loss_ok else "gradients are not finite (a rank's loss was)"
        last = _last_checkpoint(trainer)
        raise NonFiniteLoss(
            f"{what} at step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx}); stopped "
            f"before the optimiser step{f', last good checkpoint {last}' if last else ''}; lower model.optimizer.lr, "
            "set trainer.gradient_clip_val, or check that batch's data"
        )


def _last_checkpoint(trainer) -> str | None:
    for callback in trainer.callbacks:
        if isinstance(callback, ResumeCheckpoint) and callback.path.is_file():
            return str(callback.path)
    return None
