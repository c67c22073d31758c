"""What ``python train.py`` (and every Hydra task script) runs once Hydra has composed a job's config.

A local multirun job whose trainer starts several DDP ranks launches them itself (Lightning's own
re-launch would rerun the whole sweep); any other job runs its task here. Under ``-m`` a failed
job is recorded and the sweep goes on (``skuvision.report.multirun``).
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from skuvision.distributed import job_ranks
from skuvision.report.multirun import run_multirun_job


def run_job(cfg: DictConfig, task: Callable[[DictConfig], float | None]) -> float | None:
    if job_ranks.needs_own_launch(cfg):
        return run_multirun_job(lambda: job_ranks.launch_job_ranks(cfg))
    return run_multirun_job(lambda: task(cfg))
