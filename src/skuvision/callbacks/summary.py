"""Per-epoch throughput and one parsable summary line.

The summary line (``[skuvision] epoch=3 train/loss=0.4120 val/top1=0.9150 ...``)
is what SageMaker metric definitions scrape from the job's log, and what a
human tails on a cluster where no progress bar renders.
"""

from __future__ import annotations

import logging
import time

import lightning as L
import torch

SUMMARY_PREFIX = "[skuvision]"
# our own logger, not Lightning's rank_zero_info: under Hydra that one has two handlers and printed every line twice
log = logging.getLogger("skuvision.callbacks.summary")
log.setLevel(logging.INFO)  # the line SageMaker metric definitions scrape: shown whatever the root level


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class TrainingReport(L.Callback):
    """Training images/s (all ranks) for the train batches before each validation, and the summary line."""

    def __init__(self) -> None:
        self._start = 0.0
        self._images = 0
        self.images_per_sec: list[float] = []
        self.train_seconds = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _sync()
        self._start, self._images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._images and not self._start:  # resumed mid-epoch: no epoch-start hook ran
            self._start = time.perf_counter()
        self._images += int(batch["label"].shape[0])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._rate = None
        if trainer.sanity_checking:
            return
        if self._images:
            _sync()
            seconds = max(time.perf_counter() - self._start, 1e-9)
            self.train_seconds += seconds
            rate = self._images * trainer.world_size / seconds
            self.images_per_sec.append(rate)
            pl_module.log_dict({"train/images_per_sec": rate, "train/epoch_seconds": seconds}, rank_zero_only=True)
            self._rate = rate
            self._images, self._start = 0, 0.0

    def on_validation_end(self, trainer, pl_module) -> None:
        """After epoch metrics are computed: the summary line."""
        if trainer.sanity_checking:
            return
        parts = [f"epoch={trainer.current_epoch}"]
        if getattr(self, "_rate", None) is not None:
            parts.append(f"train/images_per_sec={self._rate:.1f}")
        metrics = trainer.callback_metrics
        for key, shown in (
            ("train/loss_step", "train/loss"),
            ("val/loss", "val/loss"),
            ("val/top1", "val/top1"),
            ("val/top5", "val/top5"),
        ):
            if key in metrics:
                parts.append(f"{shown}={float(metrics[key]):.4f}")
        if trainer.is_global_zero:
            log.info("%s %s", SUMMARY_PREFIX, " ".join(parts))

    def on_test_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        parts = [f"{k}={float(v):.4f}" for k, v in sorted(metrics.items()) if k.startswith("test/")]
        if trainer.is_global_zero:
            log.info("%s test %s", SUMMARY_PREFIX, " ".join(parts))
