"""The training image's recipe (docker cannot run here): the constraints step, run for real against this
environment, keeps torch/torchvision; the build script is strict bash with a usage message and a dry run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SCRIPT = ROOT / "scripts" / "build_and_push_image.sh"


def instructions() -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_builds_on_the_smddp_image_and_installs_under_the_image_constraints():
    lines = instructions()
    assert "ARG ACCOUNT=658645717510" in lines and "ARG REGION=us-west-2" in lines
    assert "ARG TAG=2.4.1-gpu-py311-cu121" in lines
    assert "FROM ${ACCOUNT}.dkr.ecr.${REGION}.amazonaws.com/smdistributed-modelparallel:${TAG}" in lines
    runs = [line for line in lines if line.startswith("RUN ")]
    pin = next(i for i, line in enumerate(runs) if "docker/constraints.txt" in line and "pip freeze" in line)
    install = next(i for i, line in enumerate(runs) if "pip install" in line)
    assert pin < install
    assert "--constraint docker/constraints.txt" in runs[install]
    assert "pin_constraints.py --check docker/constraints.txt" in runs[install]


def test_constraints_step_pins_the_installed_torch_and_fails_when_replaced(tmp_path):
    """Run the Dockerfile's constraints RUN line as the build would, with this environment as the image."""
    step = next(line for line in instructions() if line.startswith("RUN ") and "pip freeze" in line)[4:]
    (tmp_path / "docker").mkdir()
    shutil.copy(ROOT / "docker" / "pin_constraints.py", tmp_path / "docker")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", step], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    pins = (tmp_path / "docker" / "constraints.txt").read_text().split()
    assert pins == [
        f"torch=={version('torch')}",
        f"torchvision=={version('torchvision')}",
        f"numpy=={version('numpy')}",
    ]
    check = [sys.executable, "docker/pin_constraints.py", "--check", "docker/constraints.txt"]
    assert subprocess.run(check, cwd=tmp_path, capture_output=True, timeout=60).returncode == 0
    (tmp_path / "docker" / "constraints.txt").write_text("torch==2.4.1\ntorchvision==0.19.1\nnumpy==1.26.4\n")
    replaced = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert replaced.returncode == 1 and f"torch 2.4.1 -> {version('torch')}" in replaced.stderr


def test_build_context_is_the_package_only():
    ignore = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 :][:4] == [
        "!pyproject.toml",
        "!README.md",
        "!src/",
        "!docker/pin_constraints.py",
    ]


def test_build_script_is_strict_with_usage_and_a_dry_run():
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "\nset -euo pipefail\n" in text
    help_ = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert help_.returncode == 0 and help_.stdout.startswith("Usage: scripts/build_and_push_image.sh")
    bad = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown option: --bogus" in bad.stderr
    dry = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--region", "eu-west-1", "--tag", "v1", "--account", "111122223333"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == "111122223333.dkr.ecr.eu-west-1.amazonaws.com/skuvision:v1"  # stdout: the URI only
    assert f"docker build -f {DOCKERFILE} --build-arg ACCOUNT=658645717510 --build-arg REGION=eu-west-1" in dry.stderr
    assert "docker login --username AWS --password-stdin 658645717510.dkr.ecr.eu-west-1.amazonaws.com" in dry.stderr
    assert "docker push 111122223333.dkr.ecr.eu-west-1.amazonaws.com/skuvision:v1" in dry.stderr
