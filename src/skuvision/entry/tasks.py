"""The tasks a Hydra config can run, by config name: what the container entry and a sweep's DDP ranks look up.

A job carries only its config name and overrides; this table turns the name into the task
function (train.py -> ``train``, onboard.py -> ``onboard``) and what the container adds to
the job's overrides, so no lower layer needs to know that onboarding exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig

from skuvision import train
from skuvision.errors import ConfigError
from skuvision.onboarding import task as onboard_task


@dataclass(frozen=True)
class Task:
    run: Callable[[DictConfig], float | None]
    container_overrides: tuple[str, ...]  # what the SageMaker container adds to a job's overrides
    data_root_default: str | None = None  # data.root inside the container when the job sets none


TASKS = {
    "train": Task(train.run, ("env=sagemaker",)),
    "onboard": Task(onboard_task.run, ("paths=sagemaker",), "${paths.train_channel}"),
}


def task_for(config_name: str) -> Task:
    try:
        return TASKS[config_name]
    except KeyError:
        raise ConfigError(f"config_name={config_name}: no such task; use one of {', '.join(TASKS)}") from None
