"""Start DDP ranks as fresh processes and run the training task in each under Hydra.

Used by a local ``-m`` job that trains with DDP and by the SageMaker entry on a multi-GPU host with
no launcher: torchrun starts the ranks, each runs the task in Hydra *run* mode with the job's
overrides and one pinned ``hydra.run.dir``. Not Lightning's launcher: it re-executes ``sys.argv``
(under ``-m``, the whole sweep again: Lightning #11300) and leaks rank 0's process group into the
next job. Not ``ddp_spawn``: it pickles trainer, model and datamodule and breaks on unpicklable
callbacks. torchrun also kills the surviving ranks when one fails, so a broken job fails, not hangs.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from typing import Any

import hydra

from skuvision.config.compose import config_dir
from skuvision.errors import exit_on_user_error

log = logging.getLogger(__name__)


def quote(value: str) -> str:
    """A Hydra override value in single quotes (paths may hold characters the grammar reserves)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def rank_overrides(run_dir: str, rank: int, job_files: bool) -> list[str]:
    """Hydra overrides pinning every rank to ``run_dir``; only rank 0 writes ``.hydra/`` and the log file."""
    overrides = [f"hydra.run.dir={quote(run_dir)}"]
    if rank != 0 or not job_files:
        overrides.append("hydra.output_subdir=null")
    if rank != 0:  # console only: the run dir's log file is rank 0's
        overrides.append("hydra.job_logging.root.handlers=[console]")
    return overrides


def run_hydra_task(
    task: Callable[[Any], Any], overrides: Iterable[str], config_dir: str, config_name: str = "train"
) -> None:
    """Run ``task`` (the training task) as ``python train.py <overrides>`` would: @hydra.main, run mode, user errors exit 2.

    The task comes in as an argument, so this module never imports the task that imports it back.
    """
    task = hydra.main(version_base="1.3", config_path=str(config_dir), config_name=config_name)(
        exit_on_user_error(task)
    )

    saved = sys.argv
    sys.argv = [saved[0], *overrides]
    try:
        task()
    finally:
        sys.argv = saved


def torchrun_command(nproc: int, module: str, args: Iterable[str]) -> list[str]:
    """One host, ``nproc`` ranks, a free rendezvous port (``--standalone``); torch 2.4's torchrun has all of these."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc_per_node={nproc}",
        "-m",
        module,
        *args,
    ]


def run_ranks(command: list[str], env: dict | None = None) -> int:
    """Run the launcher in the foreground, passing SIGTERM/SIGINT on (spot interruptions reach every rank).

    Once the ranks have stopped, the signal stops this process too (KeyboardInterrupt, or exit 143 for
    SIGTERM): a sweep treats a failed job as one to report and go past, an interrupted one as the end.
    """
    proc = subprocess.Popen(command, env=env)
    forwarded = {}
    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        proc.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            forwarded[signum] = signal.signal(signum, forward)
        except ValueError:  # not the main thread: nothing to forward from
            pass
    try:
        status = proc.wait()
    finally:
        for signum, handler in forwarded.items():
            signal.signal(signum, handler)
    if signal.SIGINT in received:
        raise KeyboardInterrupt
    if signal.SIGTERM in received:
        sys.exit(128 + signal.SIGTERM)
    return status


def config_source(hydra_cfg) -> tuple[str, str]:
    """(config dir, config name) the current Hydra job was composed from."""
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "main":
            path = source.path
            if source.schema == "file":
                return path, hydra_cfg.job.config_name
            return f"{source.schema}://{path}", hydra_cfg.job.config_name

    return str(config_dir()), hydra_cfg.job.config_name
