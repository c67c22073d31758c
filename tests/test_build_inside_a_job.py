"""A shard build never hangs inside a distributed job (issue 14).

Found by a user: the container entry under torchrun with 2 ranks and the default experiment (which
generates and shards the synthetic catalogue on first use) stalled for 10 minutes inside the build.
The cause was litdata's writer: it sizes its world from ``WORLD_SIZE`` (which torchrun and SageMaker
export to every rank) and rank 0's ``merge()`` waited for an index from rank 1, which never builds.
"""

from __future__ import annotations

import fcntl
import json
import os

import pytest
from test_distributed_entry import ENTRY, TORCHRUN, overrides_arg, run, sagemaker_env

from helpers import TINY_MODEL, shards_build_cli

RANK_VARS = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "GLOBAL_RANK": "0", "NNODES": "1"}


def test_shards_build_finishes_in_a_process_that_is_rank_0_of_two(tiny_catalogue, tmp_path):
    out = tmp_path / "shards"
    # timeout: before the fix this never returned (litdata's merge waited for rank 1's index)
    result = shards_build_cli("--input", str(tiny_catalogue), "--out", str(out), env=RANK_VARS, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    index = json.loads((out / "train" / "index.json").read_text())
    assert sum(c["chunk_size"] for c in index["chunks"]) == manifest["splits"]["train"]["count"] > 0


def test_the_build_leaves_the_jobs_own_rank_variables_alone(tiny_catalogue, tmp_path, monkeypatch):
    from skuvision.data.shards import BuildSettings, build_shards

    for name, value in RANK_VARS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GLOBAL_RANK")
    build_shards(tiny_catalogue, tmp_path / "shards", BuildSettings(size=32), progress=False)
    assert (os.environ["WORLD_SIZE"], os.environ["NNODES"]) == ("2", "1")  # as the job set them
    assert "GLOBAL_RANK" not in os.environ  # unset before, unset after


def test_a_rank_waiting_for_the_quickstart_build_gives_up_with_one_line(tmp_path):
    from skuvision.data.quickstart_data import ensure_synthetic_shards
    from skuvision.errors import DataError

    root = tmp_path / "quickstart" / "shards"
    root.parent.mkdir(parents=True)
    lock_path = root.parent / ".shards.lock"
    with open(lock_path, "w") as builder:  # another rank is building (and stays stuck)
        fcntl.flock(builder, fcntl.LOCK_EX)
        with pytest.raises(DataError, match=r"\.shards\.lock: another process has held this lock") as err:
            ensure_synthetic_shards(root, skus=2, images_per_sku=2, size=32, wait_s=1.0)
    assert "data.synthetic.wait_s" in str(err.value) and "\n" not in str(err.value)
    assert not root.exists()  # the waiting rank built nothing


@pytest.mark.slow
def test_torchrun_two_ranks_generate_the_quickstart_data_once_and_train(tmp_path):
    """The user's report, as they ran it: the container entry, 2 ranks, the default experiment, no data yet."""
    overrides = [
        *TINY_MODEL,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.strategy.timeout.seconds=60",
        "trainer.max_epochs=1",
        "data.synthetic.skus=4",
        "data.synthetic.images_per_sku=16",
        "data.synthetic.size=48",
        "data.batch_size=4",
        "data.num_workers=0",
    ]
    env = sagemaker_env(tmp_path, tmp_path / "no-channel", stub=False)
    result = run([*TORCHRUN, *ENTRY, *overrides_arg(*overrides)], env, timeout=360)
    assert result.returncode == 0, result.output[-4000:]

    data = tmp_path / "data" / "quickstart"
    assert (data / "shards" / "manifest.json").is_file() and not (data / "shards.partial").exists()
    assert result.output.count("generating synthetic catalogue") == 1  # one rank built, the other waited
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs"] == 1 and "test/top1" in metrics
