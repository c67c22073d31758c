"""The catalogue-scale shard build as ONE SageMaker Processing job (SDK v2 ``Processor``).

N instances run the training image; each runs ``python -m skuvision.entry.processing_build``, which
builds the partitions of its rank (``resourceconfig.json``) to ``--out s3://...``, and the first host
(sorted by name) waits for every partition's completion marker and merges. The settings are the
training launcher's (``SageMakerLauncherConf``: role, image, region, subnets, security groups, tags,
volume, environment), checked by ``settings.check_processing``; defaults come from that schema and
``--launcher-config FILE`` (the launcher's keys, YAML) overrides them, so there is no second copy.

The job runs the submitted code, not the copy in the image: the source archive (``source.py``) is
uploaded and passed as an input, and the container command unpacks it first. Originals on S3 (a
prefix of SKU folders or a CSV) are not a ProcessingInput: the instances list them and stream each
original with ``get_object`` (``skuvision.data.s3_sources``), so no instance downloads the catalogue.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from skuvision.data.remote import is_s3, split_s3_uri
from skuvision.errors import ConfigError, DataError
from skuvision.sagemaker.job import aws_errors, make_session
from skuvision.sagemaker.settings import SageMakerLauncherConf, check_processing, from_params, job_name, resolve_region
from skuvision.sagemaker.source import SourceArchive, build_archive, project_root

ENTRY_MODULE = "skuvision.entry.processing_build"
CODE_DIR = "/opt/ml/processing/input/code"
ARCHIVE = "sourcedir.tar.gz"
SCRATCH = "/opt/ml/processing/scratch"  # on the job's volume (volume_size_gb), not the container's small root disk
# unpack the submitted code, put its src/ first, stage on the volume, run the entry with the job's arguments ("$@")
LAUNCH = (
    f"set -e; mkdir -p /opt/ml/code {SCRATCH}; export TMPDIR={SCRATCH}; "
    f"tar -xzf {CODE_DIR}/{ARCHIVE} -C /opt/ml/code; "
    'export PYTHONPATH="/opt/ml/code/src${PYTHONPATH:+:$PYTHONPATH}"; '
    f'exec python -m {ENTRY_MODULE} "$@"'
)
ENTRYPOINT = ["bash", "-c", LAUNCH, "skuvision-processing"]


@dataclass(frozen=True)
class ShardBuildJob:
    """What the instances build: the user's input and output, P partitions, and the build's own flags."""

    input: str
    out: str
    partitions: int
    build_args: tuple[str, ...] = ()  # --size 256 --quality 90 ... as given to `shards build`
    retry_partitions: tuple[int, ...] = ()  # a one-instance job that rebuilds these alone, then merges
    merge_timeout: int = 1800
    submitted_with: tuple[str, ...] = ()  # --launcher-config FILE --instance-type T: named in the retry command

    def arguments(self) -> list[str]:
        retry = ["--retry-partition", ",".join(map(str, self.retry_partitions))] if self.retry_partitions else []
        if self.submitted_with:
            retry += ["--submitted-with", shlex.join(self.submitted_with)]
        return [
            "--input", self.input, "--out", self.out,
            "--partitions", str(self.partitions), "--merge-timeout", str(self.merge_timeout),
            *retry, *self.build_args,
        ]  # fmt: skip


def check_job(job: ShardBuildJob) -> None:
    """One line for an input the instances cannot use, before anything is uploaded."""
    if not is_s3(job.out):
        raise DataError(
            f"--on sagemaker --out {job.out}: the instances write to S3, not to this machine; "
            "pass --out s3://BUCKET/PREFIX"
        )
    split_s3_uri(job.out)
    label_map = dict(zip(job.build_args[::2], job.build_args[1::2])).get("--label-map")
    if label_map and not is_s3(label_map):
        raise DataError(f"--label-map {label_map}: the instances cannot read this machine's files; pass its s3:// copy")
    wrong = [k for k in job.retry_partitions if not 0 <= k < job.partitions]
    if wrong:
        raise DataError(f"--retry-partition {wrong[0]}: need 0 <= K < --partitions ({job.partitions})")


def launcher_settings(path: Optional[str], **overrides: Any) -> SageMakerLauncherConf:
    """The training launcher's settings: its schema's defaults, then ``path`` (YAML), then ``overrides``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        config = OmegaConf.structured(SageMakerLauncherConf)
        if path:
            config = OmegaConf.merge(config, OmegaConf.load(path))
        config = OmegaConf.merge(config, {k: v for k, v in overrides.items() if v is not None})
        params = OmegaConf.to_container(config, resolve=True)
    except (OSError, OmegaConfBaseException) as exc:
        raise ConfigError(f"--launcher-config {path}: {str(exc).splitlines()[0]}") from None
    settings = from_params(params)
    check_processing(settings)
    return settings


@dataclass
class ProcessingSubmitter:
    """Builds (and, unless dry run, submits) the shard build's Processing job; all its SDK calls."""

    settings: SageMakerLauncherConf
    region: str
    dry_run: bool = False
    started: datetime = field(default_factory=datetime.now)

    def __post_init__(self) -> None:
        self.session = make_session(self.region)
        prefix = (self.settings.s3_prefix or "").rstrip("/")
        if not prefix and self.dry_run:
            prefix = f"s3://sagemaker-{self.region}-ACCOUNT/skuvision"  # the SDK default bucket, unresolved
        elif not prefix:
            with aws_errors("finding the SageMaker default bucket"):
                prefix = f"s3://{self.session.default_bucket()}/skuvision"
        self.s3_prefix = prefix

    def name(self, job: ShardBuildJob) -> str:
        base = f"{self.settings.base_job_name}-shards" + ("-retry" if job.retry_partitions else "")
        return job_name(base, self.started, min(job.retry_partitions, default=0))

    def code_uri(self, name: str) -> str:
        return f"{self.s3_prefix}/code/{name}/{ARCHIVE}"

    def processor(self):
        from sagemaker.network import NetworkConfig
        from sagemaker.processing import Processor

        s = self.settings
        network = NetworkConfig(subnets=list(s.subnets), security_group_ids=list(s.security_group_ids))
        tags = {**{str(k): str(v) for k, v in s.tags.items()}, "skuvision:job": "shards-build"}
        env = {**{str(k): str(v) for k, v in s.environment.items()}, "AWS_DEFAULT_REGION": self.region}
        return Processor(
            role=s.role,
            image_uri=s.image_uri,
            instance_count=s.instance_count,
            instance_type=s.instance_type,
            entrypoint=ENTRYPOINT,
            volume_size_in_gb=s.volume_size_gb,
            max_runtime_in_seconds=s.max_run,
            base_job_name=s.base_job_name,
            sagemaker_session=self.session,
            env={**env, "PYTHONUNBUFFERED": "1"},
            tags=[{"Key": k, "Value": v} for k, v in tags.items()],
            network_config=network if s.subnets else None,
        )

    def inputs(self, name: str) -> list:
        """The submitted code only: originals on S3 are streamed by the instances, not downloaded up front."""
        from sagemaker.processing import ProcessingInput

        return [ProcessingInput(source=self.code_uri(name), destination=CODE_DIR, input_name="code")]

    def request(self, job: ShardBuildJob) -> dict[str, Any]:
        """The CreateProcessingJob request the SDK sends for ``job`` (dry run: built, not sent)."""
        from sagemaker.processing import ProcessingJob

        name = self.name(job)
        with aws_errors(f"building the request for {name}"):
            processor = self.processor()
            inputs, outputs = processor._normalize_args(
                job_name=name, arguments=job.arguments(), inputs=self.inputs(name)
            )
            args = ProcessingJob._get_process_args(processor, inputs, outputs, None)
            return self.session._get_process_request(**args)

    def submit(self, job: ShardBuildJob, archive: SourceArchive) -> str:
        name = self.name(job)
        bucket, key = split_s3_uri(self.code_uri(name))
        with aws_errors(f"uploading the source to {self.code_uri(name)}"):
            self.session.boto_session.client("s3").put_object(
                Bucket=bucket, Key=key, Body=archive.data, Metadata={"sha256": archive.sha256}
            )
        with aws_errors(f"CreateProcessingJob {name}"):
            self.processor().run(
                inputs=self.inputs(name), arguments=job.arguments(), wait=False, logs=False, job_name=name
            )
        return name

    def describe(self, name: str) -> dict[str, Any]:
        with aws_errors(f"DescribeProcessingJob {name}"):
            return self.session.sagemaker_client.describe_processing_job(ProcessingJobName=name)


def submit_shard_build(job: ShardBuildJob, settings: SageMakerLauncherConf) -> tuple[str, dict]:
    """Check, then submit (or, with ``settings.dry_run``, only build) the job; returns its name and request."""
    check_job(job)
    submitter = ProcessingSubmitter(settings, resolve_region(settings), dry_run=settings.dry_run)
    request = submitter.request(job)
    if settings.dry_run:
        return request["ProcessingJobName"], request
    archive = build_archive(project_root(Path(__file__).resolve().parents[3] / "conf"))
    return submitter.submit(job, archive), request


def describe_request(request: dict) -> str:
    """The request as the dry run prints it: JSON, one key per line."""
    return json.dumps(request, indent=1, sort_keys=True, default=str)
