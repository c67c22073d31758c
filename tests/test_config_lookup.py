"""The README's commands find conf/ from any directory: $SKUVISION_CONF, then ./conf, then the checkout's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKUVISION = str(Path(sys.executable).with_name("skuvision"))


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def test_summary_from_a_directory_outside_the_project(tmp_path):
    result = run([SKUVISION, "summary", "experiment=quickstart", "model.num_classes=12", "--json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    table = json.loads(result.stdout)
    assert table["backbone"] == "efficientnet_lite0" and table["num_classes"] == 12


def test_train_py_composes_from_a_directory_outside_the_project(tmp_path):
    result = run([sys.executable, str(ROOT / "train.py"), "--cfg", "job", "experiment=photos", "data.root=x"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "image_size: 160" in result.stdout and "root: x" in result.stdout


def test_skuvision_conf_wins_over_the_checkout(tmp_path):
    conf = tmp_path / "myconf"
    shutil.copytree(ROOT / "conf", conf)
    quickstart = conf / "experiment" / "quickstart.yaml"
    quickstart.write_text(quickstart.read_text().replace("backbone: efficientnet_lite0", "backbone: resnet18"))
    result = run(
        [SKUVISION, "summary", "experiment=quickstart", "model.num_classes=12", "--json"],
        cwd=tmp_path,
        SKUVISION_CONF=str(conf),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["backbone"] == "resnet18"


def test_a_skuvision_conf_without_train_yaml_is_one_line(tmp_path):
    missing = tmp_path / "missing"
    result = run([SKUVISION, "summary", "model.num_classes=12"], cwd=tmp_path, SKUVISION_CONF=str(missing))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"skuvision: error: SKUVISION_CONF={missing}: no train.yaml there; point it at the project's conf/"
    )
