"""Ridge sums of every training image, left in the tested checkpoint for onboarding.

Onboarding's ridge solver (``python onboard.py``, ``onboard.solver=ridge``) solves the SKU layer
from G = sum h h^T and C = sum h y^T over the trunk's features. With the sums of the whole train
split from the run that trained the trunk, a month adds only its new SKUs' images and gets the
solution of all images at once; without them it starts from a few replayed images per old SKU.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch

from skuvision.files import atomic_path
from skuvision.model.ridge import RandomProjection, RidgeStats, split_model, split_statistics

log = logging.getLogger(__name__)


class RidgeStatistics(L.Callback):
    """After the best checkpoint is tested: one pass over the train split, its sums written into that file."""

    def __init__(self, projection: int = 0, projection_seed: int = 0, projection_nonlinearity: str = "relu"):
        self.projection = (
            {"dim": int(projection), "seed": int(projection_seed), "nonlinearity": projection_nonlinearity}
            if projection
            else None
        )
        self.seconds: float | None = None
        self.images = 0

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        datamodule = trainer.datamodule
        if not best or not trainer.ckpt_path or Path(trainer.ckpt_path) != Path(best):
            log.info("ridge statistics skipped: the tested weights are not a saved best checkpoint")
            return
        if not hasattr(datamodule, "ordered_eval_dataloader"):
            return
        start = time.perf_counter()
        stats = self._train_split_sums(trainer, pl_module, datamodule)
        self.seconds, self.images = time.perf_counter() - start, stats.count
        if trainer.is_global_zero:
            ckpt = torch.load(best, map_location="cpu", weights_only=False)  # our own run's file
            ckpt.setdefault("onboarding", {})["ridge"] = stats.state()
            with atomic_path(Path(best)) as tmp:
                torch.save(ckpt, tmp)
            log.info("ridge statistics of %d training images in %.1f s -> %s", stats.count, self.seconds, best)
        trainer.strategy.barrier("ridge_statistics")

    def _train_split_sums(self, trainer: L.Trainer, pl_module, datamodule) -> RidgeStats:
        trunk, last = split_model(pl_module)
        projection = None
        if self.projection:
            projection = RandomProjection(last.in_features, **self.projection)
        bad = getattr(datamodule, "bad_samples", None)

        def batches():
            for batch in datamodule.ordered_eval_dataloader("train"):
                batch = bad.take(batch) if bad is not None else batch
                yield batch["image"], batch["label"]

        stats = split_statistics(trunk, batches(), datamodule.num_classes, pl_module.device, projection)
        if stats is None:  # this rank read nothing
            dim = last.in_features if projection is None else projection.dim
            stats = RidgeStats(dim, datamodule.num_classes, projection=self.projection)
        if trainer.world_size > 1:  # every rank read its share of the split
            for name in ("gram", "cross"):
                summed = trainer.strategy.reduce(getattr(stats, name).to(pl_module.device), reduce_op="sum")
                setattr(stats, name, summed.cpu())
            stats.count = int(
                trainer.strategy.reduce(torch.tensor(stats.count, device=pl_module.device), reduce_op="sum")
            )
        return stats
