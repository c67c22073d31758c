"""Launcher settings checks (before any AWS call), job names, the source archive. Pure Python, fast."""

from __future__ import annotations

import io
import re
import tarfile
from datetime import datetime
from pathlib import Path

import pytest

from skuvision.errors import ConfigError
from skuvision.sagemaker.settings import SageMakerLauncherConf, check, from_params, job_name

ROOT = Path(__file__).resolve().parents[1]
GOOD = {
    "role": "arn:aws:iam::123456789012:role/SageMakerSkuvision",
    "image_uri": "123456789012.dkr.ecr.us-west-2.amazonaws.com/skuvision:1",
    "s3_prefix": "s3://bucket/skuvision",
    "fsx": {"file_system_id": "fs-0123456789abcdef0", "directory_path": "/fsx/shards"},
    "subnets": ["subnet-0123456789abcdef0"],
    "security_group_ids": ["sg-0123456789abcdef0"],
}


def settings(**changes) -> SageMakerLauncherConf:
    params = {**GOOD, **changes}
    return from_params(params)


# each good variant, and a one-key change of it that the check must refuse: proof that it looked at that key
GOOD_VARIANTS = [
    ({}, {"role": "SageMakerRole"}),
    (
        {"fsx": {"file_system_id": "fs-01234567", "directory_path": "/abcdefgh", "mount_name": "abcdefgh"}},
        {"fsx": {"file_system_id": "fs-01234567", "directory_path": "/abcdefgh", "mount_name": "other123"}},
    ),
    (
        {"instance_type": "ml.p4de.24xlarge", "spot": {"use_spot": True, "max_wait": 200000}},
        {"instance_type": "ml.p4de.24xlarge", "spot": {"use_spot": True, "max_wait": 60}},
    ),
    (
        {"distribution": "torchrun", "instance_type": "ml.g5.48xlarge"},
        {"distribution": "smddp", "instance_type": "ml.g5.48xlarge"},
    ),
    (
        {"fsx": {}, "subnets": [], "security_group_ids": []},  # no FSx: data.root from S3
        {"fsx": {}, "subnets": ["subnet-xyz"], "security_group_ids": []},
    ),
]


def test_defaults_are_the_production_cluster():
    s = settings()
    assert (s.instance_type, s.instance_count, s.distribution) == ("ml.p4d.24xlarge", 2, "smddp")


@pytest.mark.parametrize("good, near_miss", GOOD_VARIANTS)
def test_good_settings_pass_and_a_one_key_change_fails(good, near_miss):
    assert check(settings(**good)) is None
    with pytest.raises(ConfigError):
        check(settings(**near_miss))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"instance_type": "ml.g5.48xlarge"}, "hydra.launcher.instance_type=ml.g5.48xlarge: SMDDP runs only on ml.p4d"),
        ({"role": None}, "hydra.launcher.role is missing"),
        ({"role": "SageMakerRole"}, "hydra.launcher.role=SageMakerRole: not an IAM role ARN"),
        ({"image_uri": None}, "hydra.launcher.image_uri is missing"),
        ({"distribution": "horovod"}, "hydra.launcher.distribution=horovod: must be one of smddp, torchrun, none"),
        ({"distribution": "none"}, "hydra.launcher.distribution=none: runs one process"),
        (
            {"fsx": {"file_system_id": "fs-123", "directory_path": "/fsx"}},
            "hydra.launcher.fsx.file_system_id=fs-123: malformed",
        ),
        (
            {"fsx": {"file_system_id": "fs-0123456789ABCDEF0", "directory_path": "/fsx"}},
            "fsx.file_system_id=fs-0123456789ABCDEF0",
        ),
        (
            {"fsx": {"file_system_id": "fs-0123456789abcdef0", "directory_path": "shards"}},
            "fsx.directory_path=shards: must be /<MountName>",
        ),
        (
            {"fsx": {"file_system_id": "fs-0123456789abcdef0", "directory_path": "/toolongname/x"}},
            "fsx.directory_path=/toolongname/x",
        ),
        (
            {"fsx": {"file_system_id": "fs-0123456789abcdef0", "directory_path": None}},
            "fsx.directory_path=None: must be",
        ),
        (
            {"fsx": {"file_system_id": "fs-0123456789abcdef0", "directory_path": "/fsx/../etc"}},
            "fsx.directory_path=/fsx/../etc",
        ),
        (
            {"fsx": {"file_system_id": "fs-0123456789abcdef0", "directory_path": "/fsx/x", "mount_name": "abcd1234"}},
            "must start with /abcd1234",
        ),
        (
            {"fsx": {"file_system_id": "fs-0123456789abcdef0", "directory_path": "/fsx", "access_mode": "w"}},
            "fsx.access_mode=w",
        ),
        ({"subnets": [], "security_group_ids": []}, "hydra.launcher.fsx needs the file system's VPC"),
        ({"security_group_ids": []}, "hydra.launcher.security_group_ids is empty"),
        ({"subnets": ["subnet-xyz"]}, "hydra.launcher.subnets=subnet-xyz: malformed"),
        ({"spot": {"use_spot": True}, "s3_prefix": None}, "spot.use_spot=true needs a checkpoint location"),
        ({"spot": {"use_spot": True, "max_wait": 60}}, "hydra.launcher.spot.max_wait=60: must be >= max_run"),
        ({"output_path": "bucket/out"}, "hydra.launcher.output_path=bucket/out: not an S3 URI"),
        (
            {"environment": {"WANDB_API_KEY": "s3cr3t-value"}},
            "hydra.launcher.environment.WANDB_API_KEY: looks like a secret",
        ),
        ({"instance_count": 0}, "hydra.launcher.instance_count=0: must be at least 1"),
    ],
)
def test_bad_settings_fail_with_one_line_naming_the_key(changes, message):
    with pytest.raises(ConfigError) as info:
        check(settings(**changes))
    text = str(info.value)
    assert message in text and "\n" not in text
    assert "s3cr3t" not in text  # a secret's value is never echoed


def test_spot_with_explicit_checkpoint_location_needs_no_prefix():
    assert check(settings(spot={"use_spot": True}, s3_prefix=None, checkpoint_s3_uri="s3://bucket/ckpt")) is None
    with pytest.raises(ConfigError, match="needs a checkpoint location"):
        check(settings(spot={"use_spot": True}, s3_prefix=None, checkpoint_s3_uri=None))


def test_job_names_are_deterministic_unique_and_valid():
    started = datetime(2026, 11, 27, 9, 26, 29)
    names = [job_name("skuvision", started, i) for i in range(1200)]
    assert names[0] == "skuvision-20261127-092629-000" and names[1111] == "skuvision-20261127-092629-1111"
    assert len(set(names)) == len(names) and names == [job_name("skuvision", started, i) for i in range(1200)]
    valid = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    for base in ("skuvision", "my_team/FMCG.sweep--v2!", "x" * 100, "---", "a-" * 40):
        name = job_name(base, started, 7)
        assert valid.match(name) and len(name) <= 63 and name.endswith("-20261127-092629-007"), name
    assert job_name("my_team/FMCG", started, 0).startswith("my-team-FMCG-")


def test_source_archive_is_the_code_only_and_reproducible(tmp_path):
    from skuvision.sagemaker.source import ENTRY_SCRIPT, build_archive, project_root

    root = tmp_path / "project"
    for name, text in {
        "train.py": "",
        "pyproject.toml": "",
        "conf/train.yaml": "",
        "conf/data/shards.yaml": "",
        "conf/local/default.yaml": "secret: path",
        "src/skuvision/data/datamodule.py": "",
        "src/skuvision/__pycache__/x.pyc": "",
        "src/skuvision.egg-info/PKG-INFO": "",
        "data/big.jpg": "x",
        "logs/run/metrics.json": "{}",
        ".venv/bin/python": "",
        ".git/HEAD": "",
        "wandb/run/x": "",
        "outputs/x": "",
        "src/skuvision/model.ckpt": "w",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    archive = build_archive(project_root(root / "conf"))
    names = tarfile.open(fileobj=io.BytesIO(archive.data)).getnames()
    assert sorted(names) == sorted(
        [
            "conf/data/shards.yaml",
            "conf/train.yaml",
            "pyproject.toml",
            "src/skuvision/data/datamodule.py",
            "train.py",
            ENTRY_SCRIPT,
        ]
    )
    assert build_archive(project_root(root / "conf")).data == archive.data  # reproducible bytes
    with pytest.raises(ConfigError, match="no train.py"):
        project_root(tmp_path / "elsewhere" / "conf")


def test_entry_script_runs_the_uploaded_source_not_the_installed_package(tmp_path):
    """skuvision_entry.py puts the archive's src/ first and runs skuvision.entry.sagemaker_job as __main__."""
    import subprocess
    import sys

    from skuvision.sagemaker.source import ENTRY_SOURCE

    code = tmp_path / "code"
    (code / "src/skuvision/entry").mkdir(parents=True)
    (code / "src/skuvision/__init__.py").write_text("")
    (code / "src/skuvision/entry/__init__.py").write_text("")
    # the entry's own folder must not come first on sys.path, where a module named like a stdlib one shadows it
    (code / "src/skuvision/entry/secrets.py").write_text("raise SystemExit('shadowed the stdlib')\n")
    (code / "src/skuvision/entry/sagemaker_job.py").write_text(
        "import os, secrets, sys, skuvision\n"
        "print('UPLOADED', skuvision.__file__, __name__, sys.argv[1:], os.environ['SKUVISION_CONF'],"
        " secrets.token_hex(1) is not None)\n"
    )
    (code / "skuvision_entry.py").write_text(ENTRY_SOURCE)
    out = subprocess.run(
        [sys.executable, "skuvision_entry.py", "--overrides", '["a=1"]'],
        cwd=code,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert (
        f"UPLOADED {code / 'src/skuvision/__init__.py'} __main__ ['--overrides', '[\"a=1\"]'] {code / 'conf'} True"
        in out.stdout
    )


def test_plugin_registers_the_launcher_and_its_discovery_imports_no_sdk():
    import subprocess
    import sys

    code = (
        "import sys; from hydra.core.config_store import ConfigStore; "
        "import hydra_plugins.skuvision_sagemaker.config, hydra_plugins.skuvision_sagemaker.launcher; "
        "node = ConfigStore.instance().load('hydra/launcher/sagemaker.yaml').node; "
        "print(node._target_, node.instance_type, node.instance_count, node.distribution); "
        "print(sorted(m for m in ('sagemaker', 'boto3', 'botocore', 'torch', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "hydra_plugins.skuvision_sagemaker.launcher.SageMakerLauncher ml.p4d.24xlarge 2 smddp",
        "[]",
    ]


def test_each_job_needs_one_data_source():
    from skuvision.sagemaker.settings import check_job_data

    fsx, no_fsx = settings(), settings(fsx={}, subnets=[], security_group_ids=[])
    check_job_data(fsx, ["experiment=resnet152_fmcg"], data_root_missing=True)  # the channel provides it
    check_job_data(no_fsx, ["data.root=s3://bucket/shards"], data_root_missing=False)
    check_job_data(no_fsx, ["experiment=quickstart"], data_root_missing=False)  # synthetic data, generated
    with pytest.raises(ConfigError, match=r"^data.root=/fsx/shards: the job reads the FSx channel"):
        check_job_data(fsx, ["experiment=resnet152_fmcg", "data.root=/fsx/shards"], data_root_missing=False)
    with pytest.raises(ConfigError, match="^data.root is not set and the job mounts no FSx channel"):
        check_job_data(no_fsx, ["experiment=resnet152_fmcg"], data_root_missing=True)
