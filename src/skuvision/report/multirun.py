"""A sweep outlives a failed job: the job is reported, the next one runs, and the sweep ends non-zero.

Without this, one job's error line (``exit 2``) or a DDP job whose rank died ended the whole
``-m`` sweep there, and the jobs after it never ran. Now each job of a multirun runs through
:func:`run_multirun_job`: a job that raises writes ``FAILED.json`` (its number, overrides and the
reason) into its own dir, logs one line, and hands the sweeper NaN (Optuna counts that a failed
trial). :class:`MultirunStatus`, a Hydra callback in ``conf/hydra/default.yaml``, ends the sweep
with one line per failed job and where the outputs are, and exits 1 if any job failed. Ctrl-C and
SIGTERM still stop the sweep at once: they are not job failures.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from skuvision.errors import user_error_message
from skuvision.files import write_json

log = logging.getLogger("skuvision.sweep")

FAILED = "FAILED.json"


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_multirun_job(job: Callable[[], Any]) -> Any:
    """Run one job of a multirun; a failure is recorded and reported instead of ending the sweep."""
    if not in_multirun():
        return job()

    hc = HydraConfig.get()
    try:
        return job()
    except Exception as exc:  # noqa: BLE001 - any failure of this job: the other jobs still run
        reason = user_error_message(exc)
        if reason is None:  # a bug, not bad input: keep the traceback in the job's log
            log.exception("sweep job %s raised", hc.job.num)
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        overrides = list(hc.overrides.task)
        write_json(
            Path(hc.runtime.output_dir) / FAILED,
            {"job": hc.job.num, "overrides": overrides, "reason": reason},
            indent=1,
        )
        log.error("sweep job %s failed (%s): %s; the sweep goes on", hc.job.num, " ".join(overrides), reason)
        return float("nan")


def failed_jobs(sweep_dir: str | Path) -> list[dict]:
    """The ``FAILED.json`` records of a sweep dir's jobs, by job number."""
    records = []
    for path in Path(sweep_dir).glob(f"*/{FAILED}"):
        try:
            records.append({**json.loads(path.read_text()), "dir": str(path.parent)})
        except ValueError:
            records.append({"job": path.parent.name, "overrides": [], "reason": "unreadable FAILED.json"})
    return sorted(records, key=lambda r: int(r["job"]) if str(r["job"]).isdigit() else 0)


class MultirunStatus(Callback):
    """Hydra callback: the sweep's last lines are its outcome, and its exit status says whether a job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()] if sweep_dir.is_dir() else []
        failed = failed_jobs(sweep_dir)
        if not failed:
            if "BasicLauncher" not in str(config.hydra.launcher.get("_target_", "")):
                return  # a remote launcher (SageMaker) reports its own jobs' ends
            print(f"skuvision: sweep: {len(jobs)} job(s) done; outputs in {sweep_dir}", file=sys.stderr, flush=True)
            return
        for record in failed:
            overrides = " ".join(record["overrides"])
            print(f"skuvision: sweep job {record['job']} failed ({overrides}): {record['reason']}", file=sys.stderr)
        print(f"skuvision: sweep: {len(failed)} of {len(jobs)} job(s) failed; outputs in {sweep_dir}", file=sys.stderr)
        sys.exit(1)
