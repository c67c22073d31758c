"""The work of the ``sagemaker`` Hydra launcher: one SageMaker training job per sweep job, optionally waited for.

Built like Hydra's submitit launcher: every job's config is composed locally first (so a bad
override or setting fails here, before anything is uploaded), then submitted. Each job dir under
the sweep dir gets the job's ``.hydra/config.yaml`` and ``overrides.yaml`` as a local run would,
plus ``sagemaker_job.json``, and with ``wait: true`` the job's ``metrics.json``, so sweep reports
read SageMaker sweeps like local ones. ``sagemaker_jobs.json`` in the sweep dir lists every job.
The plugin class itself (hydra_plugins.skuvision_sagemaker) only hands over to this module.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.errors import CompactHydraException
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict

from skuvision.config import schema
from skuvision.errors import UserError
from skuvision.loggers.wandb import job_env
from skuvision.onboarding import settings as onboard_settings
from skuvision.sagemaker import settings as sm
from skuvision.sagemaker.job import JobSpec, Submitter
from skuvision.sagemaker.settings import check_job_data, from_params
from skuvision.sagemaker.source import build_archive, project_root

log = logging.getLogger("hydra_plugins.skuvision_sagemaker.launcher")


class SageMakerJobFailed(CompactHydraException):
    """A job ended Failed or Stopped; Hydra prints this one line (the FailureReason) without a traceback."""


class _Sweep:
    """What every step of one launch() shares: checked settings, where the jobs go, the source archive."""

    def __init__(self, settings: Any, region: str, sweep_id: str, dir: Path) -> None:
        self.settings, self.region, self.sweep_id, self.dir = settings, region, sweep_id, dir
        self.archive: Any = None  # set by _package_source, once every job's config is checked
        self.submitter: Any = None
        self.source_sha256 = ""
        self.source_uri = ""  # set by _submit


class SageMakerSweep:
    """One launch() of the ``sagemaker`` launcher: compose and check every job, package the source, submit, wait."""

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        config: DictConfig | None = None,
        hydra_context: HydraContext | None = None,
        started: datetime | None = None,
    ) -> None:
        self.params = params or {}
        self.config, self.hydra_context = config, hydra_context
        self.started = started or datetime.now()  # the launcher's: job names stay unique across launch() batches

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        try:
            return self._launch(job_overrides, initial_job_idx)
        except UserError as exc:  # one line, exit 2, like every skuvision entry point
            print(f"skuvision: error: {str(exc).splitlines()[0]}", file=sys.stderr, flush=True)
            sys.exit(2)

    # ------------------------------------------------------------------------------------------------
    def settings(self):
        plain = {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in self.params.items()
        }
        return from_params(plain)

    def config_name(self) -> str:
        """The sweep's config (train, onboard): the container runs that config's task."""
        return str(self.config.hydra.job.config_name or "train")

    def _config_dir(self) -> str:
        for source in self.config.hydra.runtime.config_sources:
            if source.provider == "main" and source.schema == "file":
                return source.path
        return str(Path(self.config.hydra.runtime.cwd) / "conf")

    def _job_config(self, settings, overrides: list[str], num: int, name: str) -> tuple[DictConfig, dict[str, str]]:
        """The job's config as Hydra's local launcher composes it, checked, and the job's W&B group/name."""
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = name
            sweep_config.hydra.job.num = num
        saved = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(sweep_config)  # as run_job does: ${hydra:...} resolves, job_env sees the job
        try:
            # bad settings fail before paying for a cluster; the train or onboarding task's own checks
            checks = onboard_settings.validate if self.config_name() == "onboard" else schema.validate
            checks(sweep_config, need_data=False)
            check_job_data(settings, filter_overrides(overrides), OmegaConf.is_missing(sweep_config.data, "root"))
            env = job_env()  # the container's W&B run joins this sweep's group under the job's name
        finally:
            HydraConfig.instance().cfg = saved
        return sweep_config, env

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        sweep = self._start_sweep()
        jobs, configs = self._plan_jobs(sweep, job_overrides, initial_job_idx)  # a bad job fails before any upload
        self._package_source(sweep)
        if sweep.settings.dry_run:
            return self._dry_run(sweep, jobs, configs)
        records = self._submit(sweep, jobs, configs)
        if not sweep.settings.wait:
            return [
                self._job_return(
                    job, cfg, sweep.dir, JobStatus.COMPLETED, {"job_name": job.name, "console_url": r["console_url"]}
                )
                for job, cfg, r in zip(jobs, configs, records)
            ]
        return self._wait(sweep, jobs, configs, records)

    def _start_sweep(self) -> _Sweep:
        """Checked settings and the region: everything known before the first job."""
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        settings = self.settings()
        sm.check(settings)
        region = sm.resolve_region(settings)
        sweep_id = sm.sweep_stamp(self.started)
        return _Sweep(settings=settings, region=region, sweep_id=sweep_id, dir=Path(str(self.config.hydra.sweep.dir)))

    def _package_source(self, sweep: _Sweep) -> None:
        """The project's source archive and the submitter that uploads it (no AWS call yet)."""
        sweep.archive = build_archive(project_root(self._config_dir()))
        sweep.source_sha256 = sweep.archive.sha256
        sweep.submitter = Submitter(sweep.settings, sweep.region, sweep.sweep_id, dry_run=sweep.settings.dry_run)

    def _plan_jobs(self, sweep: _Sweep, job_overrides, initial_job_idx: int) -> tuple[list, list[DictConfig]]:
        """Each job's name, task overrides and composed (checked) config, before anything is uploaded."""
        jobs, configs = [], []
        for offset, overrides in enumerate(job_overrides):
            num = initial_job_idx + offset
            name = sm.job_name(sweep.settings.base_job_name, self.started, num)
            task_overrides = [o for o in filter_overrides(overrides) if not o.startswith("hydra/")]
            cfg, env = self._job_config(sweep.settings, list(overrides), num, name)
            configs.append(cfg)
            jobs.append(
                JobSpec(
                    num=num,
                    name=name,
                    overrides=tuple(task_overrides),
                    environment=env,
                    config_name=self.config_name(),
                )
            )
        return jobs, configs

    def _dry_run(self, sweep: _Sweep, jobs: list, configs: list[DictConfig]) -> list[JobReturn]:
        """Print every CreateTrainingJob request; nothing is sent."""
        log.info(
            "SageMaker dry run: %d CreateTrainingJob request(s), nothing sent; source: %s",
            len(jobs),
            sweep.archive.describe(),
        )
        requests = [sweep.submitter.request(job) for job in jobs]
        for request in requests:
            print(json.dumps(request, indent=2, sort_keys=True, default=str), flush=True)
        return [
            self._job_return(job, cfg, sweep.dir, JobStatus.COMPLETED, request)
            for job, cfg, request in zip(jobs, configs, requests)
        ]

    def _submit(self, sweep: _Sweep, jobs: list, configs: list[DictConfig]) -> list[dict]:
        """Upload the source once, create every job, and record each in its job dir and the sweep's index."""
        settings, submitter = sweep.settings, sweep.submitter
        sweep.dir.mkdir(parents=True, exist_ok=True)
        sweep.source_uri = submitter.upload_source(sweep.archive)
        log.info(
            "SageMaker sweep %s: %d job(s) on %d x %s (%s), source %s (%s)",
            sweep.sweep_id,
            len(jobs),
            settings.instance_count,
            settings.instance_type,
            settings.distribution,
            sweep.source_uri,
            sweep.archive.describe(),
        )
        records = []
        for job, cfg in zip(jobs, configs):
            submitter.submit(job)
            record = {
                "num": job.num,
                "name": job.name,
                "overrides": list(job.overrides),
                "console_url": sm.console_url(sweep.region, job.name),
                "model_uri": submitter.model_uri(job.name),
                "checkpoint_uri": submitter.checkpoint_uri(job.name),
                "status": "InProgress",
            }
            records.append(record)
            self._write_job_dir(cfg, sweep.dir, job, record)
            self._write_index(sweep, records)  # after every job, so the record survives a later job's failure
            log.info("\t#%d : %s -> %s", job.num, " ".join(job.overrides), record["console_url"])
        return records

    def _wait(self, sweep: _Sweep, jobs: list, configs: list[DictConfig], records: list[dict]) -> list[JobReturn]:
        log.info(
            "waiting for %d job(s), polling every %ss (Ctrl-C stops waiting, not the jobs)",
            len(jobs),
            sweep.settings.poll_seconds,
        )
        results = sweep.submitter.collect(
            [job.name for job in jobs],
            sweep.settings.poll_seconds,
            on_status=lambda name, status, d: log.info("%s: %s (%s)", name, status, d.get("SecondaryStatus", "")),
        )
        returns = [
            self._job_ended(sweep, job, cfg, record, results[job.name])
            for job, cfg, record in zip(jobs, configs, records)
        ]
        self._write_index(sweep, records)
        return returns

    def _job_ended(self, sweep: _Sweep, job, cfg: DictConfig, record: dict, result) -> JobReturn:
        """Record how one job ended (its metric, or why it failed) in its job dir; Hydra's return for it."""
        record["status"] = result.status
        job_dir = self._job_dir(cfg, sweep.dir)
        if result.status == "Completed":
            metric_name = cfg.get("optimized_metric") or "val/top1"
            value = (result.metrics or {}).get(metric_name)
            record["metric"] = {metric_name: value}
            if result.metrics is not None:
                (job_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=2, sort_keys=True))
            log.info("#%d %s: %s=%s", job.num, job.name, metric_name, value)
            returned = self._job_return(job, cfg, sweep.dir, JobStatus.COMPLETED, value)
        else:
            record["failure_reason"] = result.failure_reason
            log.error(
                "#%d %s %s: %s (%s)", job.num, job.name, result.status, result.failure_reason, record["console_url"]
            )
            error = SageMakerJobFailed(
                f"SageMaker job {job.name} ({' '.join(job.overrides)}) {result.status}: {result.failure_reason}"
            )
            returned = self._job_return(job, cfg, sweep.dir, JobStatus.FAILED, error)
        (job_dir / "sagemaker_job.json").write_text(json.dumps(record, indent=2))
        return returned

    # ---- files and returns -------------------------------------------------------------------------
    @staticmethod
    def _job_dir(cfg: DictConfig, sweep_dir: Path) -> Path:
        return sweep_dir / str(cfg.hydra.sweep.subdir)

    def _write_job_dir(self, cfg: DictConfig, sweep_dir: Path, job, record: dict) -> None:
        """What a local run leaves in its job dir (config, overrides), so the sweep dir reads the same."""
        job_dir = self._job_dir(cfg, sweep_dir)
        (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
        OmegaConf.save(task_cfg, job_dir / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create(list(job.overrides)), job_dir / ".hydra" / "overrides.yaml")
        (job_dir / "sagemaker_job.json").write_text(json.dumps(record, indent=2))

    @staticmethod
    def _write_index(sweep: _Sweep, records: list) -> None:
        """``sagemaker_jobs.json``, merged with earlier batches of the same sweep (optimising sweepers)."""
        path = sweep.dir / "sagemaker_jobs.json"
        known = json.loads(path.read_text()).get("jobs", []) if path.is_file() else []
        by_num = {job["num"]: job for job in known} | {job["num"]: job for job in records}
        index = {
            "sweep_id": sweep.sweep_id,
            "region": sweep.region,
            "source_uri": sweep.source_uri,
            "source_sha256": sweep.source_sha256,
            "jobs": [by_num[n] for n in sorted(by_num)],
        }
        path.write_text(json.dumps(index, indent=2))

    def _job_return(self, job, cfg: DictConfig, sweep_dir: Path, status: JobStatus, value: Any) -> JobReturn:
        ret = JobReturn()
        ret.overrides = list(job.overrides)
        ret.cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
        ret.hydra_cfg = OmegaConf.create({"hydra": cfg.hydra})
        ret.working_dir = str(self._job_dir(cfg, sweep_dir))
        ret.task_name = str(cfg.hydra.job.name)
        ret.status = status
        ret.return_value = value
        return ret
