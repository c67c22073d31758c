"""The ``sagemaker`` launcher (``hydra/launcher=sagemaker``): one SageMaker training job per sweep job.

Hydra executes every plugin module at start-up (plugin discovery), on every run, so this one stays
as cheap to import as Hydra's submitit launcher: the work lives in ``skuvision.entry.sagemaker_sweep``,
imported when a sweep is launched.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Optional

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class SageMakerLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.params = params
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None
        # one timestamp per sweep: job names stay unique across the launch() batches of a sweeper
        self.started = datetime.now()

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # the one deferred import: skuvision and torch load only when a sweep is sent to SageMaker
        from skuvision.entry.sagemaker_sweep import SageMakerSweep

        sweep = SageMakerSweep(self.params, self.config, self.hydra_context, self.started)
        return sweep.launch(job_overrides, initial_job_idx)
