"""Shared fixtures: a tiny synthetic catalogue, its shards, and composed configs.

Session-scoped so the catalogue is rendered and sharded once per test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from moto_aws import aws, moto_server  # noqa: F401  the moto fixtures, for every test module

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
TINY_SKUS, TINY_IMAGES = 6, 14


@pytest.fixture(scope="session")
def tiny_catalogue(tmp_path_factory) -> Path:
    from skuvision.data.synthetic import write_catalogue

    out = tmp_path_factory.mktemp("catalogue")
    write_catalogue(out, TINY_SKUS, TINY_IMAGES, size=72, seed=3, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_shards(tiny_catalogue, tmp_path_factory) -> Path:
    from skuvision.data.shards import BuildSettings, build_shards

    out = tmp_path_factory.mktemp("shards") / "tiny"
    build_shards(tiny_catalogue, out, BuildSettings(size=64, val=0.2, test=0.2), progress=False)
    return out


def compose_train_cfg(tmp_path: Path, overrides: list[str]):
    """The config `python train.py <overrides>` would run, with outputs under tmp_path."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from skuvision.config.compose import compose

    cfg = compose(overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.data_dir = str(tmp_path / "data")
        del cfg.hydra
    return cfg


# the smallest model that still trains: resnet10t from random init (no weights offline) on 32 px images
TINY_MODEL = [
    "model.backbone=resnet10t",
    "model.pretrained=false",
    "model.freeze_depth=0",
    "model.head.hidden_dims=[32]",
    "data.image_size=32",
]
# no progress bar, CSV logger only: for tests that read a subprocess's output or time nothing; the
# multi-rank tests keep the defaults on (tests/test_distributed_collectives.py)
QUIET = ["trainer.enable_progress_bar=false", "~callbacks.progress_bar", "logger=csv"]

FAST_TRAIN = [
    "model.backbone=resnet10t",
    "model.pretrained=false",
    "model.freeze_depth=0",
    "model.head.hidden_dims=[64]",
    "data.image_size=48",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "~callbacks.progress_bar",
]


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def shards_build_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """``skuvision shards build ARGS...`` as a user runs it, in a subprocess."""
    return run_cli("-m", "skuvision.cli", "shards", "build", *args, **kwargs)
