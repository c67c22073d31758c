"""Collectives in the same order on every rank, whatever other callbacks a run has."""

from __future__ import annotations

import lightning as L


class EpochMetricsSync(L.Callback):
    """Computes the synced epoch metrics on every rank before any other callback runs.

    Lightning computes epoch metrics lazily, at their first read, and for ``sync_dist``
    values and torchmetrics that computation is a collective. A rank-0-only callback
    (the progress bar) reading them first on rank 0, while rank 1 goes on to the next
    collective (a checkpoint save's barrier), pairs mismatched collectives: a hang.
    The train task puts this callback first in every run, whatever the config lists,
    so every rank issues those collectives at the same point (see
    :mod:`skuvision.distributed` for the rule).
    """

    @staticmethod
    def _compute(trainer) -> None:
        if trainer.world_size > 1:
            trainer.callback_metrics  # noqa: B018 -- the read is the point: it syncs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._compute(trainer)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._compute(trainer)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._compute(trainer)
