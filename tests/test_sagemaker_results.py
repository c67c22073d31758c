"""Waiting for jobs and reading their results, in-process against moto on 127.0.0.1.

The jobs are created through the real submission path; moto marks them Completed at once. The
test then plays the cluster's part: it uploads a model.tar.gz holding metrics.json where
SageMaker would, and marks one job Failed in the moto server's state (moto cannot fail a job).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from omegaconf import open_dict

from helpers.moto_aws import REGION

ROLE = "arn:aws:iam::123456789012:role/SageMakerSkuvision"
ROOT = Path(__file__).resolve().parents[1]


def model_tar(metrics: dict) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in {"model.ckpt": b"weights", "metrics.json": json.dumps(metrics).encode()}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def fail_in_moto(name: str, reason: str) -> None:
    from moto.sagemaker.models import sagemaker_backends

    job = sagemaker_backends["123456789012"][REGION].training_jobs[name]
    job.training_job_status, job.secondary_status, job.failure_reason = "Failed", "Failed", reason


@pytest.fixture
def submitted(aws, tmp_path):
    """Two jobs created through Submitter (the launcher's SDK path): #0 will complete, #1 will fail."""
    from skuvision.sagemaker.job import JobSpec, Submitter
    from skuvision.sagemaker.settings import from_params
    from skuvision.sagemaker.source import build_archive

    aws.client("s3").create_bucket(Bucket="results", CreateBucketConfiguration={"LocationConstraint": REGION})
    settings = from_params(
        {
            "role": ROLE,
            "image_uri": "123456789012.dkr.ecr.us-west-2.amazonaws.com/skuvision:1",
            "s3_prefix": "s3://results/skuvision",
            "instance_type": "ml.g5.2xlarge",
            "instance_count": 1,
            "distribution": "none",
        }
    )
    submitter = Submitter(settings, REGION, "20261127-101500")
    submitter.upload_source(build_archive(ROOT))
    jobs = [
        JobSpec(num=i, name=f"skuvision-20261127-101500-00{i}", overrides=("experiment=quickstart", f"seed={i}"))
        for i in range(2)
    ]
    for job in jobs:
        assert submitter.submit(job) == job.name
    return submitter, jobs


def test_collect_reads_metrics_of_completed_jobs_and_failure_reasons(aws, submitted):
    submitter, jobs = submitted
    described = submitter.describe(jobs[0].name)
    assert described["ModelArtifacts"]["S3ModelArtifacts"] == submitter.model_uri(jobs[0].name)
    request = submitter.request(jobs[0])  # what dry_run prints is what was submitted
    for key in ("HyperParameters", "ResourceConfig", "StoppingCondition", "OutputDataConfig", "RoleArn"):
        assert request[key] == described[key], key
    aws.client("s3").put_object(
        Bucket="results",
        Key=submitter.model_uri(jobs[0].name).split("/", 3)[3],
        Body=model_tar({"val/top1": 0.8125, "test/top1": 0.79}),
    )
    fail_in_moto(jobs[1].name, "AlgorithmError: CUDA out of memory")
    seen = []
    results = submitter.collect(
        [j.name for j in jobs], poll_seconds=0.01, on_status=lambda name, status, _: seen.append((name, status))
    )
    assert results[jobs[0].name].status == "Completed"
    assert results[jobs[0].name].metrics == {"val/top1": 0.8125, "test/top1": 0.79}
    assert results[jobs[1].name].status == "Failed"
    assert results[jobs[1].name].failure_reason == "AlgorithmError: CUDA out of memory"
    assert sorted(seen) == sorted([(jobs[0].name, "Completed"), (jobs[1].name, "Failed")])


def test_launcher_returns_metric_or_failure_per_job(aws, submitted, tmp_path):
    """The JobReturns a sweeper gets with wait: true: the optimised metric, or a failure naming the reason."""
    from hydra.core.utils import JobStatus
    from hydra.errors import CompactHydraException

    from skuvision.config.compose import compose

    submitter, jobs = submitted
    aws.client("s3").put_object(
        Bucket="results", Key=submitter.model_uri(jobs[0].name).split("/", 3)[3], Body=model_tar({"val/top1": 0.75})
    )
    fail_in_moto(jobs[1].name, "ClientError: out of disk")
    configs = []
    for job in jobs:
        cfg = compose(list(job.overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.job.num, cfg.hydra.job.name = job.num, "train"
        configs.append(cfg)
    from skuvision.entry.sagemaker_sweep import SageMakerJobFailed, SageMakerSweep, _Sweep

    records = [
        {"num": j.num, "name": j.name, "overrides": list(j.overrides), "console_url": f"https://x/{j.name}"}
        for j in jobs
    ]
    sweep_dir = tmp_path / "sweep"
    for num in range(2):
        (sweep_dir / str(num)).mkdir(parents=True)
    sweep = _Sweep(submitter.settings, REGION, "20261127-101500", sweep_dir)
    sweep.submitter, sweep.source_uri, sweep.source_sha256 = submitter, submitter.source_uri, "sha"
    returns = SageMakerSweep()._wait(sweep, jobs, configs, records)
    assert [r.status for r in returns] == [JobStatus.COMPLETED, JobStatus.FAILED]
    assert returns[0].return_value == 0.75 and returns[0].overrides == ["experiment=quickstart", "seed=0"]
    assert json.loads((sweep_dir / "0" / "metrics.json").read_text()) == {"val/top1": 0.75}
    with pytest.raises(SageMakerJobFailed, match=f"{jobs[1].name} .*Failed: ClientError: out of disk"):
        _ = returns[1].return_value
    assert issubclass(SageMakerJobFailed, CompactHydraException)  # Hydra prints it as one line
    index = json.loads((sweep_dir / "sagemaker_jobs.json").read_text())
    assert [(j["status"], j.get("failure_reason")) for j in index["jobs"]] == [
        ("Completed", None),
        ("Failed", "ClientError: out of disk"),
    ]
