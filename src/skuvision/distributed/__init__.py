"""Distributed plumbing: SageMaker cluster environment, the SMDDP strategy, per-job DDP launching.

Importing this package registers the ``smddp`` strategy (``trainer=smddp``). The rule every hook,
callback and logger keeps: **every rank issues the same collectives in the same order** (checkpoint
saves, reduce/barrier/broadcast, the first read of a synced epoch metric). So epoch metrics are
computed on all ranks first (``EpochMetricsSync``, added by the train task so no config drops it),
anything that saves or waits does so on every rank, nothing creates a sub-group, and every
collective is bounded by ``trainer.strategy.timeout``.
"""

from lightning.pytorch.strategies import StrategyRegistry

from skuvision.distributed.environment import SageMakerEnvironment
from skuvision.distributed.strategy import SMDDPStrategy

SMDDPStrategy.register_strategies(StrategyRegistry)

__all__ = ["SMDDPStrategy", "SageMakerEnvironment"]
