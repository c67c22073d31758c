"""One DDP rank of a locally launched job: ``torchrun ... -m skuvision.entry.ddp_rank``.

Started by ``skuvision.distributed.job_ranks`` with the sweep job's overrides; runs
the job's task (by its config name) in Hydra run mode pinned to the job's dir. The job's
``.hydra/`` is already there (Hydra wrote it for the sweep job), so no rank
writes one; rank 0 alone logs to the run dir's file.
"""

from __future__ import annotations

import argparse

from skuvision.distributed.environment import launcher_rank
from skuvision.distributed.launch import rank_overrides, run_hydra_task
from skuvision.entry.tasks import task_for


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m skuvision.entry.ddp_rank")
    parser.add_argument("--config-dir", required=True)
    parser.add_argument("--config-name", default="train")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    overrides = [*args.overrides, *rank_overrides(args.run_dir, launcher_rank(), job_files=False)]

    run_hydra_task(task_for(args.config_name).run, overrides, args.config_dir, args.config_name)


if __name__ == "__main__":
    main()
