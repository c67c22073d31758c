"""Settings of the `sagemaker` Hydra launcher, and the checks that run before any AWS call.

The dataclasses are the launcher's schema (registered as ``hydra/launcher: sagemaker`` by
``hydra_plugins.skuvision_sagemaker``). ``check`` turns every setting that SageMaker would
reject minutes later, or that would silently waste a p4d cluster, into one line naming the
key and what to do, before anything is uploaded or submitted. Pure Python: no SDK import.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from skuvision.config.overrides import sets
from skuvision.errors import ConfigError

# Deferred on purpose: boto3/botocore are slow to import and only S3 paths need them.

# SMDDP's AllReduce runs only on these instance types (AWS: "Supported instance types" of the SMDDP library)
SMDDP_INSTANCE_TYPES = ("ml.p4d.24xlarge", "ml.p4de.24xlarge")
DISTRIBUTIONS = ("smddp", "torchrun", "none")
PREFIX = "hydra.launcher"
# a name whose value belongs in Secrets Manager, not in DescribeTrainingJob's Environment
SECRET_NAME = re.compile(r"(API_?KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL)", re.IGNORECASE)

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
FSX_ID = re.compile(r"^fs-([0-9a-f]{8}|[0-9a-f]{17})$")
# FSx for Lustre channels are addressed as /<MountName>/<path>; mount names are [A-Za-z0-9_-]{1,8}
FSX_PATH = re.compile(r"^/(?P<mount>[A-Za-z0-9_-]{1,8})(/\S*)?$")
SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8,17}$")
S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_JOB_NAME = 63


@dataclass
class SpotSettings:
    use_spot: bool = False
    # seconds to wait for spot capacity plus run time; null: 2 x max_run
    max_wait: Optional[int] = None


@dataclass
class FSxSettings:
    # fs-0123456789abcdef0; null: no file system channel (read data.root from S3 instead)
    file_system_id: Optional[str] = None
    # /<MountName>/<path> (aws fsx describe-file-systems ... LustreConfiguration.MountName)
    directory_path: Optional[str] = None
    access_mode: str = "ro"
    # optional: when set, directory_path must start with /<mount_name>
    mount_name: Optional[str] = None
    # the channel name: the container sees the data at /opt/ml/input/data/<channel> (SM_CHANNEL_<CHANNEL>)
    channel: str = "train"


@dataclass
class SageMakerLauncherConf:
    _target_: str = "hydra_plugins.skuvision_sagemaker.launcher.SageMakerLauncher"
    role: Optional[str] = "${oc.env:SKUVISION_SAGEMAKER_ROLE,null}"
    image_uri: Optional[str] = "${oc.env:SKUVISION_IMAGE_URI,null}"
    # null: AWS_REGION / AWS_DEFAULT_REGION / the AWS profile's region
    region: Optional[str] = None
    instance_type: str = "ml.p4d.24xlarge"
    instance_count: int = 2
    distribution: str = "smddp"
    volume_size_gb: int = 200
    max_run: int = 24 * 3600
    spot: SpotSettings = field(default_factory=SpotSettings)
    # s3://bucket/prefix: code/, output/ and checkpoints/ go below it; null: the SDK's default bucket
    s3_prefix: Optional[str] = "${oc.env:SKUVISION_S3_PREFIX,null}"
    # a prefix: each job checkpoints to <checkpoint_s3_uri>/<job name>; null: <s3_prefix>/checkpoints
    checkpoint_s3_uri: Optional[str] = None
    # model.tar.gz lands in <output_path>/<job name>/output/; null: <s3_prefix>/output
    output_path: Optional[str] = None
    fsx: FSxSettings = field(default_factory=FSxSettings)
    subnets: list[str] = field(default_factory=list)
    security_group_ids: list[str] = field(default_factory=list)
    base_job_name: str = "skuvision"
    tags: dict[str, str] = field(default_factory=dict)
    # non-secret variables for the container; secrets go through wandb_secret_name
    environment: dict[str, str] = field(default_factory=dict)
    # AWS Secrets Manager secret holding the W&B API key; read inside the container only
    wandb_secret_name: Optional[str] = None
    wait: bool = False
    poll_seconds: int = 60
    dry_run: bool = False


def from_params(params: dict[str, Any]) -> SageMakerLauncherConf:
    """The launcher's kwargs (plain, resolved) as the typed settings."""
    params = dict(params)
    params.pop("_target_", None)
    spot = SpotSettings(**(params.pop("spot", None) or {}))
    fsx = FSxSettings(**(params.pop("fsx", None) or {}))
    return SageMakerLauncherConf(spot=spot, fsx=fsx, **params)


def resolve_region(settings: SageMakerLauncherConf) -> str:
    region = settings.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        import boto3

        region = boto3.session.Session().region_name
    if not region:
        raise ConfigError(f"{PREFIX}.region is not set: pass {PREFIX}.region=us-west-2 or set AWS_REGION")
    return region


def _bad(key: str, value: Any, what: str) -> ConfigError:
    return ConfigError(f"{PREFIX}.{key}={value}: {what}")


def check(s: SageMakerLauncherConf) -> None:
    """Raise ConfigError naming the first setting SageMaker would reject or that cannot work."""
    _check_identity(s)
    _check_cluster(s)
    _check_common(s)
    _check_fsx(s)
    _check_spot(s)
    _check_environment(s)


def check_processing(s: SageMakerLauncherConf) -> None:
    """``check`` for a Processing job (the shard build): the same account, image, network and environment
    checks; no distribution, FSx channel or spot (a Processing job has none of them)."""
    _check_identity(s)
    if not s.instance_type.startswith("ml."):
        raise _bad("instance_type", s.instance_type, "not a SageMaker instance type (e.g. ml.c5.9xlarge)")
    if s.instance_count < 1:
        raise _bad("instance_count", s.instance_count, "must be at least 1")
    _check_common(s)
    _check_environment(s)


def _check_identity(s: SageMakerLauncherConf) -> None:
    if not s.role:
        raise ConfigError(
            f"{PREFIX}.role is missing: pass {PREFIX}.role=arn:aws:iam::<account>:role/<name> "
            "(or set SKUVISION_SAGEMAKER_ROLE); see README, Run on SageMaker, step 1"
        )
    if not ROLE_ARN.match(s.role):
        raise _bad("role", s.role, "not an IAM role ARN; expected arn:aws:iam::<12-digit account>:role/<name>")
    if not s.image_uri:
        raise ConfigError(
            f"{PREFIX}.image_uri is missing: build and push the training image with "
            "scripts/build_and_push_image.sh and pass the URI it prints (or set SKUVISION_IMAGE_URI)"
        )


def _check_common(s: SageMakerLauncherConf) -> None:
    for key in ("volume_size_gb", "max_run", "poll_seconds"):
        if getattr(s, key) < 1:
            raise _bad(key, getattr(s, key), "must be positive")
    for key in ("s3_prefix", "checkpoint_s3_uri", "output_path"):
        value = getattr(s, key)
        if value and not S3_URI.match(value):
            raise _bad(key, value, "not an S3 URI; expected s3://<bucket>/<prefix>")
    _check_network(s)


def _check_cluster(s: SageMakerLauncherConf) -> None:
    if s.distribution not in DISTRIBUTIONS:
        raise _bad("distribution", s.distribution, f"must be one of {', '.join(DISTRIBUTIONS)}")
    if s.distribution == "smddp" and s.instance_type not in SMDDP_INSTANCE_TYPES:
        raise _bad(
            "instance_type",
            s.instance_type,
            f"SMDDP runs only on {' or '.join(SMDDP_INSTANCE_TYPES)}; "
            f"pick one of those or pass {PREFIX}.distribution=torchrun",
        )
    if not s.instance_type.startswith("ml."):
        raise _bad("instance_type", s.instance_type, "not a SageMaker training instance type (e.g. ml.p4d.24xlarge)")
    if s.instance_count < 1:
        raise _bad("instance_count", s.instance_count, "must be at least 1")
    if s.distribution == "none" and s.instance_count > 1:
        raise _bad(
            "distribution",
            "none",
            f"runs one process on one instance but instance_count={s.instance_count}; "
            "use smddp or torchrun, or instance_count=1",
        )


def _check_spot(s: SageMakerLauncherConf) -> None:
    if s.spot.use_spot:
        if not (s.checkpoint_s3_uri or s.s3_prefix):
            raise ConfigError(
                f"{PREFIX}.spot.use_spot=true needs a checkpoint location to survive interruptions: "
                f"pass {PREFIX}.checkpoint_s3_uri=s3://<bucket>/<prefix> or {PREFIX}.s3_prefix=..."
            )
        if s.spot.max_wait is not None and s.spot.max_wait < s.max_run:
            raise _bad(
                "spot.max_wait", s.spot.max_wait, f"must be >= max_run ({s.max_run} s): it includes the run time"
            )


def _check_environment(s: SageMakerLauncherConf) -> None:
    for name in s.environment:
        if not ENV_NAME.match(str(name)):
            raise _bad(f"environment.{name}", s.environment[name], "not a valid environment variable name")
        if SECRET_NAME.search(str(name)):
            raise ConfigError(
                f"{PREFIX}.environment.{name}: looks like a secret, and job environments are "
                "visible in DescribeTrainingJob; store it in AWS Secrets Manager "
                f"({PREFIX}.wandb_secret_name for W&B)"
            )


def _check_network(s: SageMakerLauncherConf) -> None:
    for key, pattern, example in (
        ("subnets", SUBNET, "subnet-0123456789abcdef0"),
        ("security_group_ids", SECURITY_GROUP, "sg-0123456789abcdef0"),
    ):
        for value in getattr(s, key):
            if not pattern.match(str(value)):
                raise _bad(key, value, f"malformed id; expected e.g. {example}")
    if bool(s.subnets) != bool(s.security_group_ids):
        missing = "security_group_ids" if s.subnets else "subnets"
        raise ConfigError(f"{PREFIX}.{missing} is empty: a VPC job needs both subnets and security_group_ids")


def _check_fsx(s: SageMakerLauncherConf) -> None:
    fsx = s.fsx
    if not fsx.file_system_id:
        if fsx.directory_path:
            raise ConfigError(f"{PREFIX}.fsx.directory_path is set but fsx.file_system_id is not: pass both")
        return
    if not FSX_ID.match(fsx.file_system_id):
        raise _bad("fsx.file_system_id", fsx.file_system_id, "malformed; expected fs- followed by 8 or 17 hex digits")
    path = fsx.directory_path
    match = FSX_PATH.match(path or "")
    if not match or "/../" in f"{path}/":
        raise _bad(
            "fsx.directory_path",
            path,
            "must be /<MountName>/<path> (the file system's mount name, "
            "from `aws fsx describe-file-systems`, then the directory), e.g. /fsx/shards/fmcg",
        )
    if fsx.mount_name and match.group("mount") != fsx.mount_name:
        raise _bad("fsx.directory_path", path, f"must start with /{fsx.mount_name} (fsx.mount_name)")
    if fsx.access_mode not in ("ro", "rw"):
        raise _bad("fsx.access_mode", fsx.access_mode, "must be ro or rw")
    if not re.match(r"^[A-Za-z0-9.\-_]{1,64}$", fsx.channel):
        raise _bad("fsx.channel", fsx.channel, "not a valid channel name")
    if not (s.subnets and s.security_group_ids):
        raise ConfigError(
            f"{PREFIX}.fsx needs the file system's VPC: pass {PREFIX}.subnets=[subnet-...] and "
            f"{PREFIX}.security_group_ids=[sg-...] (a subnet in the file system's availability zone)"
        )


def check_job_data(s: SageMakerLauncherConf, overrides: list[str], data_root_missing: bool) -> None:
    """Where a job's data comes from must be settled before it is submitted: the FSx channel or data.root."""
    root = sets(overrides, "data.root")
    if s.fsx.file_system_id and root:
        raise ConfigError(
            f"{root}: the job reads the FSx channel (/opt/ml/input/data/{s.fsx.channel} = "
            f"{s.fsx.directory_path}); drop data.root, or drop {PREFIX}.fsx to read data.root instead"
        )
    if not s.fsx.file_system_id and data_root_missing:
        raise ConfigError(
            f"data.root is not set and the job mounts no FSx channel: pass "
            f"{PREFIX}.fsx.file_system_id=... and {PREFIX}.fsx.directory_path=... "
            "(README, Run on SageMaker, step 2) or data.root=s3://<bucket>/<shards>"
        )


def sweep_stamp(started: datetime) -> str:
    return started.strftime("%Y%m%d-%H%M%S")


def job_name(base: str, started: datetime, index: int) -> str:
    """``<base>-<YYYYMMDD-HHMMSS>-<index>``: unique per sweep job, the same on every retry of the call,
    valid for SageMaker (at most 63 characters of [a-zA-Z0-9-], starting and ending alphanumeric)."""
    suffix = f"-{sweep_stamp(started)}-{index:03d}"
    clean = re.sub(r"-{2,}", "-", re.sub(r"[^a-zA-Z0-9-]+", "-", base)).strip("-") or "skuvision"
    return clean[: MAX_JOB_NAME - len(suffix)].rstrip("-") + suffix


def console_url(region: str, name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{name}"
