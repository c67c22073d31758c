"""Distributed plumbing: SageMaker cluster environment, the SMDDP strategy, per-job DDP launching.

Importing this package registers the ``smddp`` strategy with Lightning's
``StrategyRegistry`` (``Trainer(strategy="smddp")``); ``trainer=smddp`` in the
config tree selects it with its ``fallback`` setting.
"""

from lightning.pytorch.strategies import StrategyRegistry

from skuvision.distributed.environment import SageMakerEnvironment
from skuvision.distributed.strategy import SMDDPStrategy

SMDDPStrategy.register_strategies(StrategyRegistry)

__all__ = ["SMDDPStrategy", "SageMakerEnvironment"]
