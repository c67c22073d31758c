"""The shard build as one SageMaker Processing job, against a real moto server: the request it sends,
the dry run, one-line errors, and a local rehearsal of the job's N instances writing to a moto bucket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skuvision.data.build_settings import BuildSettings
from skuvision.data.shard_verify import verify_shards
from skuvision.data.shards import build_shards
from skuvision.sagemaker.processing import (
    CODE_DIR,
    ENTRY_MODULE,
    ENTRYPOINT,
    ProcessingSubmitter,
    ShardBuildJob,
    launcher_settings,
)
from skuvision.sagemaker.source import build_archive, project_root

from helpers import FAST_TRAIN, one_error_line, run_cli, shards_build_cli
from helpers.moto_aws import REGION, s3_json

ROLE = "arn:aws:iam::123456789012:role/SageMakerSkuvision"
IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/skuvision:2.4.1-smddp"
SUBNETS = ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]
GROUPS = ["sg-0123456789abcdef0"]
OUT = "s3://shards/catalogue/v2"
INPUT = "s3://originals/catalogue/"


def launcher_yaml(tmp_path, name: str = "launcher", **extra) -> str:
    settings = {
        "role": ROLE,
        "image_uri": IMAGE,
        "region": REGION,
        "s3_prefix": "s3://sm-bucket/skuvision",
        "subnets": SUBNETS,
        "security_group_ids": GROUPS,
        "tags": {"team": "vision"},
        "volume_size_gb": 500,
        "environment": {"SKUVISION_NOTE": "monthly"},
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(settings))  # JSON is YAML
    return str(path)


def make_buckets(aws, *names):
    s3 = aws.client("s3")
    for name in names:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return s3


def submit_args(tmp_path, *extra) -> list[str]:
    return ["--input", INPUT, "--out", OUT, "--size", "64", "--on", "sagemaker", "--instances", "4",
            "--instance-type", "ml.c5.9xlarge", "--launcher-config", launcher_yaml(tmp_path), *extra]  # fmt: skip


@pytest.mark.slow
def test_the_processing_job_request_read_back_from_the_server(aws, tmp_path):
    s3 = make_buckets(aws, "sm-bucket")
    result = shards_build_cli(*submit_args(tmp_path, "--partitions", "8"), env=aws.env)
    assert result.returncode == 0, result.stderr[-3000:]
    name = result.stdout.split("Processing job ")[1].split()[0]
    described = aws.client("sagemaker").describe_processing_job(ProcessingJobName=name)
    assert described["RoleArn"] == ROLE
    app = described["AppSpecification"]
    assert app["ImageUri"] == IMAGE and app["ContainerEntrypoint"][:2] == ["bash", "-c"]
    assert f"python -m {ENTRY_MODULE}" in app["ContainerEntrypoint"][2]
    assert "export TMPDIR=/opt/ml/processing/" in app["ContainerEntrypoint"][2]  # partitions stage on the volume
    args = app["ContainerArguments"]
    assert args[args.index("--input") + 1] == INPUT and args[args.index("--out") + 1] == OUT
    assert args[args.index("--partitions") + 1] == "8" and args[args.index("--size") + 1] == "64"
    assert args[args.index("--submitted-with") + 1].startswith("--instance-type ml.c5.9xlarge --launcher-config ")
    assert described["NetworkConfig"]["VpcConfig"] == {"Subnets": SUBNETS, "SecurityGroupIds": GROUPS}
    inputs = {i["InputName"]: i["S3Input"] for i in described["ProcessingInputs"]}
    assert list(inputs) == ["code"]  # the originals are streamed by the instances, not downloaded up front
    assert inputs["code"]["LocalPath"] == CODE_DIR
    code_key = inputs["code"]["S3Uri"].split("sm-bucket/", 1)[1]
    assert s3.head_object(Bucket="sm-bucket", Key=code_key)["ContentLength"] > 0  # the submitted source
    tags = {
        t["Key"]: t["Value"]
        for t in aws.client("sagemaker").list_tags(ResourceArn=described["ProcessingJobArn"])["Tags"]
    }
    assert tags["team"] == "vision" and tags["skuvision:job"] == "shards-build"


def test_what_the_server_does_not_store_is_what_was_sent(aws, tmp_path):
    """moto keeps no ProcessingResources or Environment: read them off the request as it left the client."""
    make_buckets(aws, "sm-bucket")
    settings = launcher_settings(launcher_yaml(tmp_path), instance_type="ml.c5.9xlarge", instance_count=4)
    submitter = ProcessingSubmitter(settings, REGION)
    sent = []
    submitter.session.sagemaker_client.meta.events.register(
        "before-parameter-build.sagemaker.CreateProcessingJob", lambda params, **_: sent.append(dict(params))
    )
    job = ShardBuildJob(input=INPUT, out=OUT, partitions=4)
    archive = build_archive(project_root(Path(__file__).resolve().parents[1] / "conf"))
    name = submitter.submit(job, archive)
    assert submitter.describe(name)["ProcessingJobName"] == name
    [request] = sent
    cluster = request["ProcessingResources"]["ClusterConfig"]
    assert cluster == {"InstanceCount": 4, "InstanceType": "ml.c5.9xlarge", "VolumeSizeInGB": 500}
    assert request["Environment"]["SKUVISION_NOTE"] == "monthly"
    assert request["Environment"]["AWS_DEFAULT_REGION"] == REGION
    assert request["StoppingCondition"]["MaxRuntimeInSeconds"] == settings.max_run


@pytest.mark.slow  # 10-25 s: the fast suite stays under ~10 min on 2 cores
def test_dry_run_prints_the_request_and_submits_nothing(aws, tmp_path):
    s3 = make_buckets(aws, "sm-bucket")
    result = shards_build_cli(
        *submit_args(tmp_path, "--partitions", "4", "--retry-partition", "3,1", "--dry-run"), env=aws.env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    request = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert request["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 1  # a retry is one instance
    args = request["AppSpecification"]["ContainerArguments"]
    assert args[args.index("--retry-partition") + 1] == "1,3" and args[args.index("--partitions") + 1] == "4"
    assert "dry run" in result.stdout
    assert aws.client("sagemaker").list_processing_jobs()["ProcessingJobSummaries"] == []
    assert s3.list_objects_v2(Bucket="sm-bucket").get("KeyCount", 0) == 0


@pytest.mark.slow
def test_bad_input_is_one_line_and_submits_nothing(aws, tmp_path):
    make_buckets(aws, "sm-bucket")
    no_role = launcher_yaml(tmp_path, "no-role", role=None)
    line = one_error_line(shards_build_cli(*submit_args(tmp_path), "--launcher-config", no_role, env=aws.env))
    assert "hydra.launcher.role is missing" in line
    local_out = submit_args(tmp_path)
    local_out[local_out.index(OUT)] = str(tmp_path / "shards")
    line = one_error_line(shards_build_cli(*local_out, env=aws.env))
    assert "--on sagemaker --out" in line and "pass --out s3://" in line
    line = one_error_line(
        shards_build_cli(*submit_args(tmp_path, "--partitions", "4", "--retry-partition", "4"), env=aws.env)
    )
    assert "--retry-partition 4: need 0 <= K < --partitions (4)" in line
    line = one_error_line(shards_build_cli(*submit_args(tmp_path, "--label-map", "manifest.json"), env=aws.env))
    assert "--label-map manifest.json: the instances cannot read this machine's files" in line
    on_sagemaker = submit_args(tmp_path)
    del on_sagemaker[on_sagemaker.index("--on") : on_sagemaker.index("--on") + 2]
    line = one_error_line(shards_build_cli(*on_sagemaker, env=aws.env))
    assert line.endswith("--instances, --launcher-config and --dry-run go with --on sagemaker")
    assert aws.client("sagemaker").list_processing_jobs()["ProcessingJobSummaries"] == []


@pytest.mark.slow
def test_a_local_rehearsal_of_two_instances_from_s3_to_s3_merges_and_verifies(aws, tiny_catalogue, tmp_path):
    """Two processes of the container entry, each with its own resourceconfig.json, as SageMaker starts them,
    streaming the originals from one moto bucket and writing the shards to another."""
    s3 = make_buckets(aws, "shards", "originals")
    for path in sorted(p for p in tiny_catalogue.rglob("*") if p.is_file()):
        s3.upload_file(str(path), "originals", f"catalogue/{path.relative_to(tiny_catalogue).as_posix()}")
    running = []
    for host in ("algo-2", "algo-1"):
        config = tmp_path / f"{host}.json"
        config.write_text(json.dumps({"current_host": host, "hosts": ["algo-1", "algo-2"]}))
        command = [sys.executable, "-m", ENTRY_MODULE, "--input", INPUT, "--out", OUT,
                   "--partitions", "2", "--size", "32", "--val", "0.2", "--test", "0.2", "--workers", "1",
                   "--quiet", "--poll", "0.5", "--merge-timeout", "300"]  # fmt: skip
        env = {**aws.env, "SKUVISION_RESOURCE_CONFIG": str(config)}
        running.append(subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True))  # fmt: skip
    outputs = [p.communicate(timeout=600) for p in running]
    assert [p.returncode for p in running] == [0, 0], outputs
    assert "manifest.json written" in outputs[1][0] and "manifest.json" not in outputs[0][0]  # algo-1 merges
    manifest = s3_json(s3, "shards", "catalogue/v2/manifest.json")
    assert manifest["partitions"]["count"] == 2 and manifest["rejects"] == 0
    one = build_shards(tiny_catalogue, tmp_path / "one", BuildSettings(size=32, val=0.2, test=0.2), progress=False)
    assert manifest["label_map"] == one["label_map"] and manifest["splits"] == one["splits"]
    assert verify_shards(OUT, progress=False) == []

    # and the merged shards train: one epoch straight from the bucket, through a local cache
    run_dir = tmp_path / "run"
    result = run_cli("train.py", f"data.root={OUT}", f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}",
                     *FAST_TRAIN, "data.image_size=32", "trainer.max_epochs=1", env=aws.env, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["test/top1"] >= 0


@pytest.mark.slow
def test_the_merging_instance_gives_up_with_the_retry_command_and_the_retry_merges(aws, tiny_catalogue, tmp_path):
    s3 = make_buckets(aws, "shards")
    config = tmp_path / "algo-1.json"
    config.write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1", "algo-2"]}))
    env = {**os.environ, **aws.env, "SKUVISION_RESOURCE_CONFIG": str(config)}
    entry = [sys.executable, "-m", ENTRY_MODULE, "--input", str(tiny_catalogue), "--out", OUT, "--partitions", "2",
             "--size", "32", "--workers", "1", "--quiet", "--poll", "0.2", "--merge-timeout", "1",
             "--submitted-with", "--instance-type ml.c5.9xlarge --launcher-config 'my launcher.yaml'"]  # fmt: skip
    result = subprocess.run(entry, env=env, capture_output=True, text=True, timeout=300)
    line = one_error_line(result, other_output=True)  # algo-2 never ran: partition 1 is missing
    assert "partition(s) 1-of-2 not complete after 1 s" in line
    retry = f"skuvision shards build --input {tiny_catalogue} --out {OUT} --partitions 2 --size 32"
    assert retry in line
    assert (
        "--on sagemaker --retry-partition 1 --instance-type ml.c5.9xlarge --launcher-config 'my launcher.yaml'`" in line
    )

    result = subprocess.run([*entry, "--retry-partition", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]  # what the one-instance retry job runs
    assert s3_json(s3, "shards", "catalogue/v2/manifest.json")["partitions"]["count"] == 2


def test_the_container_command_runs_the_entry_from_the_submitted_code(tmp_path):
    """The job's entrypoint, with /opt/ml moved under tmp_path: it unpacks the archive and runs its own src/."""
    code = tmp_path / "opt/ml/processing/input/code"
    code.mkdir(parents=True)
    (code / "sourcedir.tar.gz").write_bytes(
        build_archive(project_root(Path(__file__).resolve().parents[1] / "conf")).data
    )
    script = (
        ENTRYPOINT[2].replace("/opt/ml", str(tmp_path / "opt/ml")).replace("exec python ", f"exec {sys.executable} ")
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(["bash", "-c", script, ENTRYPOINT[3], "--help"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"usage: python -m {ENTRY_MODULE}" in result.stdout
    assert (tmp_path / "opt/ml/code/src/skuvision/entry/processing_build.py").is_file()
    assert (tmp_path / "opt/ml/processing/scratch").is_dir()  # TMPDIR: partitions stage on the job's volume
