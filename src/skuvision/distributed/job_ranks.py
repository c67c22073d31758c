"""Hydra multirun with local DDP: each sweep job starts its own ranks (see ``launch`` for why torchrun).

``python train.py -m trainer=ddp trainer.devices=2 model.freeze_depth=3,4`` runs
job 0 and job 1 one after the other (basic launcher); inside each job this
module starts ``devices`` fresh ranks with the job's own overrides, all pinned
to the job's output dir, waits for them, and hands the job's metric back to
the sweeper. The sweep process itself never joins a process group, so job N+1
starts as clean as job 0, and every job dir holds one ``.hydra/`` (written by
Hydra for the job) and one ``metrics.json`` (written by the job's rank 0).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from skuvision.config.overrides import parse
from skuvision.distributed.launch import config_source, quote, run_ranks, torchrun_command
from skuvision.distributed.layout import local_process_count
from skuvision.errors import ConfigError, UserError
from skuvision.loggers.wandb import job_env
from skuvision.report.multirun import in_multirun

log = logging.getLogger(__name__)

WORKER_MODULE = "skuvision.entry.ddp_rank"
# set for ranks a launcher started; not WORLD_SIZE/LOCAL_RANK, which Lightning also exports in its own
# process when it runs a one-device DDP job, and which would then leak into the next sweep job
_LAUNCHED_VARS = ("TORCHELASTIC_RUN_ID", "OMPI_COMM_WORLD_SIZE", "SM_HOSTS")
# hydra overrides that belong to the sweep, not to one job's run
_SWEEP_ONLY = (
    "hydra.mode",
    "hydra.run.",
    "hydra.sweep.",
    "hydra.launcher",
    "hydra/launcher",
    "hydra.sweeper",
    "hydra/sweeper",
    "hydra.output_subdir",
    "hydra.job.num",
    "hydra.job.id",
    "hydra.job.name",
)


def _strategy_launches_script(strategy) -> bool:
    """Whether Lightning would start the ranks by re-running ``sys.argv`` (its "popen" launcher)."""
    if strategy is None:
        return True
    if isinstance(strategy, (dict, DictConfig)):
        target = str(strategy.get("_target_", ""))
        return (
            target.rsplit(".", 1)[-1] in ("DDPStrategy", "SMDDPStrategy")
            and strategy.get("start_method", "popen") == "popen"
        )
    name = str(strategy)
    if any(word in name for word in ("spawn", "fork", "notebook")):
        return False
    return name == "auto" or name.startswith(("ddp", "smddp", "fsdp", "deepspeed"))


def needs_own_launch(cfg: DictConfig) -> bool:
    """True in a Hydra multirun job whose trainer would start several local DDP ranks by re-running argv."""
    if not in_multirun():
        return False
    if any(os.environ.get(var) for var in _LAUNCHED_VARS):
        return False  # ranks already exist (a launcher, or SageMaker)
    trainer = cfg.get("trainer") or {}
    if not _strategy_launches_script(trainer.get("strategy", "auto")):
        return False
    if str(trainer.get("num_nodes", 1)) not in ("1", "auto", "None"):
        raise ConfigError(
            f"trainer.num_nodes={trainer.get('num_nodes')}: a local multirun starts ranks on this machine only; "
            "use hydra/launcher=sagemaker for multi-node jobs"
        )
    return local_process_count(trainer) > 1


def _job_overrides(hc) -> list[str]:
    hydra_overrides = [o.input_line for o in parse(hc.overrides.hydra) if not o.key_or_group.startswith(_SWEEP_ONLY)]
    pinned = [
        f"hydra.job.num={hc.job.num}",
        f"hydra.job.id={quote(hc.job.id)}",
        f"hydra.job.name={quote(hc.job.name)}",
        f"hydra.sweep.dir={quote(hc.sweep.dir)}",
        f"hydra.sweep.subdir={quote(hc.sweep.subdir)}",
    ]
    return [*hc.overrides.task, *hydra_overrides, *pinned]


def launch_job_ranks(cfg: DictConfig) -> float | None:
    """Run this sweep job as one DDP run of fresh ranks; return its ``optimized_metric``."""
    hc = HydraConfig.get()
    nproc = local_process_count(cfg.trainer)
    config_dir, config_name = config_source(hc)
    run_dir = hc.runtime.output_dir
    args = ["--config-dir", config_dir, "--config-name", config_name, "--run-dir", run_dir, "--", *_job_overrides(hc)]
    command = torchrun_command(nproc, WORKER_MODULE, args)
    log.info("sweep job %s: starting %d DDP ranks in %s", hc.job.num, nproc, run_dir)

    # the ranks compose the job in run mode: hand them the sweep's W&B group and this job's run name
    status = run_ranks(command, env={**os.environ, **job_env(cfg.get("task_name"))})
    if status != 0:
        raise UserError(
            f"sweep job {hc.job.num} ({' '.join(hc.overrides.task)}): its DDP ranks failed (torchrun exit {status}); "
            f"see their output above and {run_dir}"
        )
    metrics_path = Path(run_dir) / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return metrics.get(cfg.get("optimized_metric") or "val/top1")
