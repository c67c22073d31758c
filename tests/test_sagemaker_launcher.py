"""`python train.py -m hydra/launcher=sagemaker ...` against a real moto server on 127.0.0.1.

moto implements CreateTrainingJob/DescribeTrainingJob and S3 (jobs do not run: they are
Completed at once), so these tests check what is submitted and uploaded, the files the sweep
leaves behind, and that the container would compose exactly the config of the local sweep job.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import run_cli

ROLE = "arn:aws:iam::123456789012:role/SageMakerSkuvision"
IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/skuvision:2.4.1-smddp"
BUCKET = "skuvision-test"
FSX = [
    "hydra.launcher.fsx.file_system_id=fs-0123456789abcdef0",
    "hydra.launcher.fsx.directory_path=/fsx/shards/fmcg",
    "hydra.launcher.subnets=[subnet-0123456789abcdef0]",
    "hydra.launcher.security_group_ids=[sg-0123456789abcdef0]",
]


def launch(tmp_path: Path, env: dict, *overrides: str, sweep: str = "model.freeze_depth=2,3,4"):
    sweep_dir = tmp_path / "sweep"
    args = [
        "train.py",
        "-m",
        "hydra/launcher=sagemaker",
        "experiment=resnet152_fmcg",
        sweep,
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.launcher.role={ROLE}",
        f"hydra.launcher.image_uri={IMAGE}",
        f"hydra.launcher.s3_prefix=s3://{BUCKET}/sweeps",
        *overrides,
    ]
    return run_cli(*args, env=env, timeout=240), sweep_dir


def jobs(sm) -> list[dict]:
    names = sorted(j["TrainingJobName"] for j in sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"])
    return [sm.describe_training_job(TrainingJobName=n) for n in names]


def source_archive(s3, job: dict) -> tarfile.TarFile:
    uri = json.loads(job["HyperParameters"]["sagemaker_submit_directory"])
    bucket, _, key = uri[len("s3://") :].partition("/")
    return tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def flat(node, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# what the container's infrastructure layer (conf/env/sagemaker.yaml) may decide besides paths:
# where data and checkpoints live, resuming, and the cluster layout — never the experiment
INFRASTRUCTURE = ("data.root", "trainer.devices", "trainer.num_nodes", "ckpt_path", "callbacks.")


LOCAL_SWEEP = """
import sys
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

@hydra.main(version_base="1.3", config_path=sys.argv.pop(1), config_name="train")
def task(cfg):
    OmegaConf.save(cfg, f"{HydraConfig.get().sweep.dir}/job{HydraConfig.get().job.num}.yaml")

task()
"""


def local_sweep_configs(tmp_path: Path, *overrides: str) -> list:
    """The task configs Hydra's own (basic) launcher hands each job of the same sweep: a stand-in task
    saves them instead of training."""
    script, sweep_dir = tmp_path / "local_sweep.py", tmp_path / "local_sweep"
    script.write_text(LOCAL_SWEEP)
    result = run_cli(
        str(script),
        str(Path(__file__).resolve().parents[1] / "conf"),
        "-m",
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return [OmegaConf.load(path) for path in sorted(sweep_dir.glob("job*.yaml"))]


def experiment(cfg, infrastructure: set[str]) -> dict:
    """The experiment: every key, unresolved, except paths, hydra and the container's infrastructure keys."""
    keys = flat(OmegaConf.to_container(cfg, resolve=False))
    return {
        k: v
        for k, v in keys.items()
        if not k.startswith(("paths.", "hydra.")) and not any(k.startswith(i) for i in infrastructure)
    }


@pytest.mark.slow  # ~40 s: Lightning's import and the sweep's composition in a subprocess
def test_sweep_submits_one_job_per_sweep_job_running_the_local_experiment(aws, tmp_path, monkeypatch):
    s3, sm = aws.client("s3"), aws.client("sagemaker")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    result, sweep_dir = launch(
        tmp_path, aws.env, *FSX, "hydra.launcher.spot.use_spot=true", "hydra.launcher.wandb_secret_name=skuvision/wandb"
    )
    assert result.returncode == 0, result.stderr[-3000:]

    described = jobs(sm)
    assert len(described) == 3
    from skuvision.sagemaker.overrides import decode_overrides

    for num, job in enumerate(described):
        name = job["TrainingJobName"]
        assert len(name) <= 63 and name.endswith(f"-{num:03d}") and name.startswith("skuvision-")
        assert job["ResourceConfig"]["InstanceType"] == "ml.p4d.24xlarge"
        assert job["ResourceConfig"]["InstanceCount"] == 2
        assert job["InputDataConfig"] == [
            {
                "ChannelName": "train",
                "DataSource": {
                    "FileSystemDataSource": {
                        "FileSystemId": "fs-0123456789abcdef0",
                        "FileSystemType": "FSxLustre",
                        "DirectoryPath": "/fsx/shards/fmcg",
                        "FileSystemAccessMode": "ro",
                    }
                },
            }
        ]
        assert job["VpcConfig"] == {
            "SecurityGroupIds": ["sg-0123456789abcdef0"],
            "Subnets": ["subnet-0123456789abcdef0"],
        }
        assert job["EnableManagedSpotTraining"] is True
        assert job["StoppingCondition"]["MaxWaitTimeInSeconds"] >= job["StoppingCondition"]["MaxRuntimeInSeconds"]
        assert job["CheckpointConfig"] == {
            "S3Uri": f"s3://{BUCKET}/sweeps/checkpoints/{name}",
            "LocalPath": "/opt/ml/checkpoints",
        }
        assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/sweeps/output/"
        assert job["HyperParameters"]["sagemaker_distributed_dataparallel_enabled"] == "true"
        user_hps = {k for k in job["HyperParameters"] if not k.startswith("sagemaker_")}
        assert user_hps == {"overrides"}
        assert decode_overrides(job["HyperParameters"]["overrides"]) == [
            "experiment=resnet152_fmcg",
            f"model.freeze_depth={num + 2}",
        ]

    names = source_archive(s3, described[0]).getnames()
    assert {
        "train.py",
        "conf/train.yaml",
        "conf/data/shards.yaml",
        "src/skuvision/train.py",
        "skuvision_entry.py",
        "src/skuvision/data/datamodule.py",
        "src/skuvision/sagemaker/job.py",
    } <= set(names)
    assert not [
        n for n in names if n.split("/")[0] not in ("train.py", "pyproject.toml", "conf", "src", "skuvision_entry.py")
    ]
    assert not [n for n in names if "__pycache__" in n or ".egg-info" in n or n.endswith(".pyc")]

    index = json.loads((sweep_dir / "sagemaker_jobs.json").read_text())
    assert [j["name"] for j in index["jobs"]] == [j["TrainingJobName"] for j in described]
    for record in index["jobs"]:
        assert record["console_url"].startswith("https://us-west-2.console.aws.amazon.com/sagemaker/")
        assert record["console_url"].endswith(record["name"])
        assert (sweep_dir / str(record["num"]) / ".hydra" / "config.yaml").is_file()
    assert "skuvision-" in result.stdout + result.stderr  # the job names/links are shown

    # Identical experiments: the config the container entry composes from a job's `overrides` (from the
    # uploaded source, plus env=sagemaker) equals the config the local launcher resolves for the same
    # sweep job, except `paths`, `hydra` and the few infrastructure keys conf/env/sagemaker.yaml sets
    # (data channel, checkpoints/resume, cluster layout).
    code = tmp_path / "opt_ml_code"  # the uploaded source, as the container sees it
    source_archive(s3, described[0]).extractall(code, filter="data")
    infrastructure = {
        k
        for k in flat(OmegaConf.to_container(OmegaConf.load(code / "conf/env/sagemaker.yaml")))
        if not k.startswith(("paths.", "defaults"))
    }
    assert all(k.startswith(INFRASTRUCTURE) for k in infrastructure), infrastructure
    from hydra.core.global_hydra import GlobalHydra

    from skuvision.config.compose import compose
    from skuvision.sagemaker.overrides import decode_overrides

    local_sweep = local_sweep_configs(tmp_path, "experiment=resnet152_fmcg", "model.freeze_depth=2,3,4")
    assert len(local_sweep) == 3
    for num, job in enumerate(described):
        overrides = decode_overrides(job["HyperParameters"]["overrides"])
        assert overrides == ["experiment=resnet152_fmcg", f"model.freeze_depth={(2, 3, 4)[num]}"]
        monkeypatch.setenv("SKUVISION_CONF", str(code / "conf"))
        GlobalHydra.instance().clear()
        in_container = compose(overrides + ["env=sagemaker"])
        local_sweep_job = local_sweep[num]
        saved = OmegaConf.load(sweep_dir / str(num) / ".hydra" / "config.yaml")  # the SageMaker sweep's record
        assert experiment(in_container, infrastructure) == experiment(local_sweep_job, infrastructure)
        assert experiment(saved, set()) == experiment(local_sweep_job, set())
        assert {
            "model.freeze_depth",
            "model.optimizer.lr",
            "data.batch_size",
            "trainer.max_epochs",
            "trainer.precision",
            "seed",
        } <= set(experiment(in_container, infrastructure))
        assert in_container.model.freeze_depth == (2, 3, 4)[num]


@pytest.mark.slow  # ~30 s
def test_wait_returns_each_job_status(aws, tmp_path):
    s3, sm = aws.client("s3"), aws.client("sagemaker")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    result, sweep_dir = launch(
        tmp_path,
        aws.env,
        "hydra.launcher.wait=true",
        "hydra.launcher.poll_seconds=1",
        "hydra.launcher.distribution=torchrun",
        "hydra.launcher.instance_type=ml.g5.12xlarge",
        f"data.root=s3://{BUCKET}/shards/fmcg",
        sweep="model.freeze_depth=2,4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    described = jobs(sm)
    assert [j["ResourceConfig"]["InstanceType"] for j in described] == ["ml.g5.12xlarge"] * 2
    assert all(j["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true" for j in described)
    index = json.loads((sweep_dir / "sagemaker_jobs.json").read_text())
    assert [j["status"] for j in index["jobs"]] == ["Completed", "Completed"]
    # moto's jobs leave no model.tar.gz: Completed, no metric (test_sagemaker_results.py reads real artefacts)
    assert all(j["metric"] == {"val/top1": None} for j in index["jobs"])
    assert "Completed" in result.stdout + result.stderr


@pytest.mark.slow  # ~20-35 s
def test_dry_run_prints_requests_and_calls_nothing(aws, tmp_path):
    """No bucket exists and nothing may be created: every API call would show up in moto."""
    env = {**aws.env, "WANDB_API_KEY": "s3cr3t-local-key"}  # the launching machine's key never travels
    result, sweep_dir = launch(
        tmp_path,
        env,
        *FSX,
        "hydra.launcher.dry_run=true",
        "+hydra.launcher.environment.TEAM=vision",
        "hydra.launcher.wandb_secret_name=skuvision/wandb",
        sweep="model.freeze_depth=2,3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    decoder, text, requests = json.JSONDecoder(), result.stdout, []
    position = text.find("{")
    while position != -1:
        request, end = decoder.raw_decode(text, position)
        requests.append(request)
        position = text.find("{", end)
    assert [r["TrainingJobName"][-3:] for r in requests] == ["000", "001"]
    assert requests[0]["ResourceConfig"] == {
        "InstanceCount": 2,
        "InstanceType": "ml.p4d.24xlarge",
        "VolumeSizeInGB": 200,
    }
    assert (
        requests[0]["InputDataConfig"][0]["DataSource"]["FileSystemDataSource"]["FileSystemId"]
        == "fs-0123456789abcdef0"
    )
    for depth, request in zip((2, 3), requests):
        assert request["Environment"] == {
            "TEAM": "vision",
            "AWS_DEFAULT_REGION": "us-west-2",
            "SKUVISION_WANDB_SECRET": "skuvision/wandb",  # a name, not the key
            "WANDB_RUN_GROUP": "train-sweep",
            "WANDB_NAME": f"freeze_depth={depth}",
        }
    assert "s3cr3t" not in result.stdout + result.stderr
    assert aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
    assert aws.client("s3").list_buckets()["Buckets"] == []
    assert not (sweep_dir / "sagemaker_jobs.json").exists()


def test_bad_setting_is_one_line_and_submits_nothing(aws, tmp_path):
    """Every check runs before any AWS call (all of them: test_sagemaker_settings.py); here through Hydra."""
    message = "hydra.launcher.instance_type=ml.g5.48xlarge: SMDDP runs only on"
    result, _ = launch(
        tmp_path, aws.env, *FSX, "hydra.launcher.instance_type=ml.g5.48xlarge", sweep="model.freeze_depth=2,3"
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [f"skuvision: error: {errors[0].split('error: ', 1)[1]}"] and message in errors[0]
    assert "Traceback" not in result.stderr
    assert aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
    assert aws.client("s3").list_buckets()["Buckets"] == []


@pytest.mark.slow  # ~30 s: the sweep's composition and the SDK in a subprocess
def test_onboarding_sweep_sent_to_sagemaker_runs_the_onboarding_task(aws, tmp_path, monkeypatch):
    """`python onboard.py -m hydra/launcher=sagemaker ...`: each job names its config, and the container entry
    turns that into the onboarding task with the onboarding config, from the uploaded source."""
    s3, sm = aws.client("s3"), aws.client("sagemaker")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "onboard.py",
        "-m",
        "hydra/launcher=sagemaker",
        "onboard.from=s3://models/2026-11/last.ckpt",
        "data.root=s3://shards/2026-12",
        "onboard.strategy=closed_form,finetune",
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.launcher.role={ROLE}",
        f"hydra.launcher.image_uri={IMAGE}",
        f"hydra.launcher.s3_prefix=s3://{BUCKET}/sweeps",
        "hydra.launcher.instance_type=ml.g5.xlarge",
        "hydra.launcher.instance_count=1",
        "hydra.launcher.distribution=none",
        env=aws.env,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    described = jobs(sm)
    assert len(described) == 2
    names = set(source_archive(s3, described[0]).getnames())
    assert {"conf/onboard.yaml", "src/skuvision/onboarding/task.py", "src/skuvision/entry/tasks.py"} <= names

    from hydra.core.global_hydra import GlobalHydra

    from skuvision.config.compose import compose
    from skuvision.entry.sagemaker_job import container_overrides, read_config_name, read_overrides
    from skuvision.entry.tasks import task_for
    from skuvision.onboarding import task as onboarding
    from skuvision.sagemaker.overrides import decode_overrides

    code = tmp_path / "opt_ml_code"
    source_archive(s3, described[0]).extractall(code, filter="data")
    monkeypatch.setenv("SKUVISION_CONF", str(code / "conf"))
    for strategy, job in zip(("closed_form", "finetune"), described):
        hps = job["HyperParameters"]
        assert {k for k in hps if not k.startswith("sagemaker_")} == {"overrides", "config_name"}
        # what the training toolkit hands the entry: each value JSON-decoded once, as --name value
        argv = ["--overrides", json.loads(hps["overrides"]), "--config_name", json.loads(hps["config_name"])]
        assert read_config_name(argv) == "onboard"
        task = task_for(read_config_name(argv))
        assert task.run is onboarding.run
        overrides = read_overrides(argv)
        assert overrides == decode_overrides(hps["overrides"])
        GlobalHydra.instance().clear()
        in_container = compose([*overrides, *container_overrides(task, overrides)], config_name="onboard")
        assert in_container.onboard.strategy == strategy
        assert in_container.onboard["from"] == "s3://models/2026-11/last.ckpt"
        assert in_container.data.root == "s3://shards/2026-12"  # the job's own, not the channel
        assert "model" not in in_container and "trainer" not in in_container
        monkeypatch.setenv("SM_HPS", json.dumps({k: json.loads(v) for k, v in hps.items()}))
        assert read_config_name([]) == "onboard" and read_overrides([]) == overrides
        monkeypatch.delenv("SM_HPS")
