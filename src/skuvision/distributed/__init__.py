"""Distributed plumbing: SageMaker cluster environment, the SMDDP strategy, per-job DDP launching.

Importing this package registers the ``smddp`` strategy with Lightning's
``StrategyRegistry`` (``Trainer(strategy="smddp")``); ``trainer=smddp`` in the
config tree selects it with its ``fallback`` setting.

The rule every hook, callback and logger here keeps: **every rank issues the same
collectives in the same order.** A collective is anything that talks to the other
ranks: a checkpoint save (barrier + broadcast of the path), ``strategy.reduce`` /
``barrier`` / ``broadcast``, and the first read of an epoch metric logged with
``sync_dist`` or a torchmetrics object (Lightning computes those lazily, and the
computation all-gathers). So:

- Epoch metrics are computed on all ranks before any callback can use them:
  ``skuvision.callbacks.EpochMetricsSync`` is put first in every run's callbacks by
  the train task (not by the config, so no config can drop it). Without it the
  rank-0-only progress bar computed them on rank 0 while rank 1 went on to the
  resume checkpoint's barrier, and both ranks hung after epoch 0.
- A callback that saves, reduces or waits does so on every rank at the same hook
  and step; only what it writes to disk or prints is rank-0-only.
- Nothing creates a sub-group (SMDDP has none): world-group collectives only.
- Every collective is bounded: ``trainer.strategy.timeout.seconds`` (default 600)
  turns an out-of-step or dead rank into an error instead of a 30-minute stall.
"""

from lightning.pytorch.strategies import StrategyRegistry

from skuvision.distributed.environment import SageMakerEnvironment
from skuvision.distributed.strategy import SMDDPStrategy

SMDDPStrategy.register_strategies(StrategyRegistry)

__all__ = ["SMDDPStrategy", "SageMakerEnvironment"]
