"""Every SageMaker SDK call skuvision makes: one training job per sweep job, and waiting for them.

SageMaker Python SDK v2 (``sagemaker>=2.257,<3``), the only line that launches SMDDP's
AllReduce (distribution ``smdistributed.dataparallel``); v3's ModelTrainer has none, so this
file is the one place to change when moving. The SDK is imported lazily, with its telemetry
switched off and its import-time chatter silenced. AWS access follows the standard chain
(credentials, ``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``), so the same code
talks to AWS or to a moto server.

The user hyperparameters are ``overrides`` (``sagemaker.overrides``) and ``config_name`` for a
sweep of ``onboard.py`` (absent for train.py); the SDK's own ``sagemaker_*`` ones (program, submit
directory, distribution) are plumbing the image's toolkit needs.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Optional

from skuvision.data.remote import split_s3_uri
from skuvision.errors import UserError
from skuvision.sagemaker.overrides import encode_overrides
from skuvision.sagemaker.settings import SageMakerLauncherConf
from skuvision.sagemaker.source import ENTRY_SCRIPT, SourceArchive

# Deferred on purpose: the sagemaker SDK (an optional extra, seconds to import) loads only when a job is submitted.
# Deferred on purpose: boto3/botocore are slow to import and only S3 paths need them.

log = logging.getLogger(__name__)

TERMINAL = ("Completed", "Failed", "Stopped")
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
# what the SDK's config carries so that no call reports usage to AWS's telemetry bucket
TELEMETRY_OFF = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
# scraped from the summary lines skuvision.callbacks.summary.TrainingReport prints on rank 0
METRICS = {
    "train/loss": r"\[skuvision\] epoch=\d+ .*?train/loss=",
    "train/images_per_sec": r"\[skuvision\] epoch=\d+ .*?train/images_per_sec=",
    "val/loss": r"\[skuvision\] epoch=\d+ .*?val/loss=",
    "val/top1": r"\[skuvision\] epoch=\d+ .*?val/top1=",
    "val/top5": r"\[skuvision\] epoch=\d+ .*?val/top5=",
    "test/top1": r"\[skuvision\] test .*?test/top1=",
    "test/top5": r"\[skuvision\] test .*?test/top5=",
}


class SageMakerError(UserError):
    """An AWS call failed (credentials, permissions, a rejected request); the message says which and why."""


@dataclass(frozen=True)
class JobSpec:
    num: int
    name: str
    overrides: tuple[str, ...]
    # per-job variables from the launcher (W&B group and run name of the sweep job)
    environment: dict[str, str] = field(default_factory=dict)
    # the sweep's config: train (train.py) or onboard (onboard.py); the container runs its task
    config_name: str = "train"

    def hyperparameters(self) -> dict[str, str]:
        """``overrides``, plus ``config_name`` for a task other than training (training jobs stay as they were)."""
        extra = {} if self.config_name == "train" else {"config_name": self.config_name}
        return {"overrides": encode_overrides(self.overrides), **extra}


@dataclass
class JobResult:
    """How a job ended: status, FailureReason, and its metrics.json (Completed jobs with an artefact)."""

    name: str
    status: str
    failure_reason: Optional[str] = None
    metrics: Optional[dict[str, Any]] = None


def metric_definitions() -> list[dict[str, str]]:
    return [{"Name": name, "Regex": prefix + _NUMBER} for name, prefix in METRICS.items()]


@contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """One clear line instead of a botocore or SDK traceback."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except UserError:
        raise
    except ValueError as exc:  # the SDK's own validation
        raise SageMakerError(f"{action}: {str(exc).splitlines()[0]}") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise SageMakerError(f"{action} failed: {error.get('Code', 'Error')}: {error.get('Message', exc)}") from None
    except BotoCoreError as exc:
        raise SageMakerError(f"{action} failed: {exc} (check AWS credentials, AWS_REGION and the network)") from None


def _import_sdk() -> None:
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # v2 on purpose: see the module docstring
    for name in ("sagemaker", "sagemaker.config", "botocore", "boto3"):  # quiet unless hydra.verbose asks
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.WARNING)
    import sagemaker  # noqa: F401


def make_session(region: str):
    """A SageMaker session in ``region`` with the user's SDK defaults config, telemetry off. No AWS call."""
    _import_sdk()
    import boto3
    from sagemaker.config import load_sagemaker_config
    from sagemaker.session import Session

    config = load_sagemaker_config()
    config.setdefault("SchemaVersion", "1.0")
    config.setdefault("SageMaker", {}).setdefault("PythonSDK", {}).setdefault("Modules", {})["TelemetryOptOut"] = True
    return Session(boto_session=boto3.Session(region_name=region), sagemaker_config=config)


class Submitter:
    """Builds and submits the sweep's training jobs. In dry-run mode it builds the same requests and calls nothing."""

    def __init__(self, settings: SageMakerLauncherConf, region: str, sweep_id: str, dry_run: bool = False) -> None:
        self.settings, self.region, self.sweep_id, self.dry_run = settings, region, sweep_id, dry_run
        self.session = make_session(region)
        self.s3_prefix = (settings.s3_prefix or "").rstrip("/")
        if not self.s3_prefix:
            if dry_run:
                self.s3_prefix = f"s3://sagemaker-{region}-ACCOUNT/skuvision"  # the SDK default bucket, unresolved
            else:
                with aws_errors("finding the SageMaker default bucket"):
                    self.s3_prefix = f"s3://{self.session.default_bucket()}/skuvision"

    # ---- locations -------------------------------------------------------------------------------
    @property
    def output_path(self) -> str:
        return (self.settings.output_path or f"{self.s3_prefix}/output").rstrip("/")

    @property
    def source_uri(self) -> str:
        return f"{self.s3_prefix}/code/{self.sweep_id}/sourcedir.tar.gz"

    def checkpoint_uri(self, name: str) -> str:
        base = (self.settings.checkpoint_s3_uri or f"{self.s3_prefix}/checkpoints").rstrip("/")
        return f"{base}/{name}"

    def model_uri(self, name: str) -> str:
        return f"{self.output_path}/{name}/output/model.tar.gz"

    # ---- building --------------------------------------------------------------------------------
    def environment(self, job: JobSpec) -> dict[str, str]:
        s = self.settings
        env = {**job.environment, **{str(k): str(v) for k, v in s.environment.items()}}
        env.setdefault("AWS_DEFAULT_REGION", self.region)
        if s.wandb_secret_name:
            env["SKUVISION_WANDB_SECRET"] = s.wandb_secret_name  # a name; the key stays in Secrets Manager
        return env

    def distribution(self) -> Optional[dict[str, Any]]:
        return {
            "smddp": {"smdistributed": {"dataparallel": {"enabled": True}}},
            "torchrun": {"torch_distributed": {"enabled": True}},
        }.get(self.settings.distribution)

    def inputs(self) -> Optional[dict[str, Any]]:
        fsx = self.settings.fsx
        if not fsx.file_system_id:
            return None
        from sagemaker.inputs import FileSystemInput

        return {
            fsx.channel: FileSystemInput(
                file_system_id=fsx.file_system_id,
                file_system_type="FSxLustre",
                directory_path=fsx.directory_path,
                file_system_access_mode=fsx.access_mode,
            )
        }

    def estimator(self, job: JobSpec):
        from sagemaker.pytorch import PyTorch

        s = self.settings
        spot = s.spot.use_spot
        tags = {
            **{str(k): str(v) for k, v in s.tags.items()},
            "skuvision:sweep": self.sweep_id,
            "skuvision:job-num": str(job.num),
        }
        return PyTorch(
            entry_point=ENTRY_SCRIPT,
            source_dir=self.source_uri,
            image_uri=s.image_uri,
            role=s.role,
            instance_type=s.instance_type,
            instance_count=s.instance_count,
            volume_size=s.volume_size_gb,
            max_run=s.max_run,
            use_spot_instances=spot,
            max_wait=(s.spot.max_wait or 2 * s.max_run) if spot else None,
            checkpoint_s3_uri=self.checkpoint_uri(job.name),
            checkpoint_local_path=CHECKPOINT_LOCAL_PATH,
            output_path=self.output_path + "/",
            subnets=list(s.subnets) or None,
            security_group_ids=list(s.security_group_ids) or None,
            base_job_name=s.base_job_name,
            tags=[{"Key": k, "Value": v} for k, v in tags.items()],
            environment=self.environment(job),
            hyperparameters=job.hyperparameters(),
            distribution=self.distribution(),
            metric_definitions=metric_definitions(),
            enable_sagemaker_metrics=True,
            debugger_hook_config=False,
            disable_profiler=True,
            sagemaker_session=self.session,
        )

    def request(self, job: JobSpec) -> dict[str, Any]:
        """The CreateTrainingJob request the SDK sends for ``job`` (dry run: built, not sent)."""
        from sagemaker.estimator import _TrainingJob

        with aws_errors(f"building the request for {job.name}"):
            estimator = self.estimator(job)
            estimator._prepare_for_training(job_name=job.name)
            args = _TrainingJob.get_train_args(estimator, self.inputs(), experiment_config=None)
            return self.session._get_train_request(**args)

    # ---- calling AWS -----------------------------------------------------------------------------
    def upload_source(self, archive: SourceArchive) -> str:
        bucket, key = split_s3_uri(self.source_uri)
        with aws_errors(f"uploading the source to {self.source_uri}"):
            self.session.boto_session.client("s3").put_object(
                Bucket=bucket, Key=key, Body=archive.data, Metadata={"sha256": archive.sha256}
            )
        return self.source_uri

    def submit(self, job: JobSpec) -> str:
        with aws_errors(f"CreateTrainingJob {job.name}"):
            estimator = self.estimator(job)
            estimator.fit(inputs=self.inputs(), wait=False, logs=False, job_name=job.name)
        return estimator.latest_training_job.name

    def describe(self, name: str) -> dict[str, Any]:
        with aws_errors(f"DescribeTrainingJob {name}"):
            return self.session.sagemaker_client.describe_training_job(TrainingJobName=name)

    def wait(
        self, names: list[str], poll_seconds: float, on_status: Callable[[str, str, dict], None] = lambda *_: None
    ) -> dict[str, dict[str, Any]]:
        """Poll until every job has ended; ``on_status(name, status, description)`` on each change."""
        done: dict[str, dict[str, Any]] = {}
        seen: dict[str, str] = {}
        try:
            while len(done) < len(names):
                for name in names:
                    if name in done:
                        continue
                    description = self.describe(name)
                    status = description["TrainingJobStatus"]
                    secondary = description.get("SecondaryStatus", "")
                    if seen.get(name) != f"{status}/{secondary}":
                        seen[name] = f"{status}/{secondary}"
                        on_status(name, status, description)
                    if status in TERMINAL:
                        done[name] = description
                if len(done) < len(names):
                    time.sleep(poll_seconds)
        except KeyboardInterrupt:
            log.warning(
                "stopped waiting; the jobs keep running on SageMaker (aws sagemaker stop-training-job "
                "--training-job-name NAME stops one)"
            )
            raise
        return done

    def collect(
        self, names: list[str], poll_seconds: float, on_status: Callable[[str, str, dict], None] = lambda *_: None
    ) -> dict[str, JobResult]:
        """Wait for the jobs, then read each Completed job's metrics.json from its model artefact."""
        results = {}
        for name, description in self.wait(names, poll_seconds, on_status).items():
            status = description["TrainingJobStatus"]
            result = JobResult(name=name, status=status)
            if status == "Completed":
                uri = description.get("ModelArtifacts", {}).get("S3ModelArtifacts") or self.model_uri(name)
                result.metrics = self.read_metrics(uri)
            else:
                result.failure_reason = description.get("FailureReason") or "no FailureReason given"
            results[name] = result
        return results

    def read_metrics(self, model_uri: str) -> Optional[dict[str, Any]]:
        """``metrics.json`` from a job's model.tar.gz (the run's outputs, written by the container entry)."""
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(model_uri)
        try:
            body = self.session.boto_session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            log.warning("no model artefact at %s (%s)", model_uri, exc.response.get("Error", {}).get("Code"))
            return None
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
            members = sorted(
                (m for m in tar.getmembers() if m.isfile() and os.path.basename(m.name) == "metrics.json"),
                key=lambda m: m.name.count("/"),
            )
            if not members:
                log.warning("%s holds no metrics.json", model_uri)
                return None
            return json.loads(tar.extractfile(members[0]).read())
