"""Shared fixtures: a tiny synthetic catalogue and its shards (importable helpers: ``tests/helpers``).

Session-scoped so the catalogue is rendered and sharded once per test run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.configs import TINY_IMAGES, TINY_SKUS
from helpers.moto_aws import aws, moto_server  # noqa: F401  the moto fixtures, for every test module

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
