"""`python train.py -m trainer=ddp ...`: each sweep job is one DDP run in its own dir (no Lightning #11300).

With the default callbacks and loggers: the epoch-end collectives must pair up on both ranks of every job.
"""

from __future__ import annotations

import json

import pytest

from helpers import run_cli


@pytest.mark.slow
def test_multirun_with_local_ddp_leaves_one_run_per_job(tiny_shards, tmp_path):
    sweep_dir, log_dir = tmp_path / "sweep", tmp_path / "logs"
    result = run_cli(
        "train.py",
        "-m",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "model.freeze_depth=3,4",
        f"data.root={tiny_shards}",
        "data.synthetic=null",
        "model.backbone=resnet10t",
        "model.pretrained=false",
        "model.head.hidden_dims=[32]",
        "data.image_size=32",
        "data.batch_size=8",
        "data.num_workers=0",
        "trainer.max_epochs=2",
        "trainer.strategy.timeout.seconds=60",  # default callbacks and loggers; an out-of-step rank fails in a minute
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.log_dir={log_dir}",
        timeout=480,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert output.count("Launching 2 jobs locally") == 1  # the sweep ran once, not once per rank

    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    for job, depth in zip(jobs, (3, 4)):
        assert list(job.rglob("metrics.json")) == [job / "metrics.json"]
        metrics = json.loads((job / "metrics.json").read_text())
        assert (metrics["freeze_depth"], metrics["world_size"], metrics["global_batch"]) == (depth, 2, 16)
        assert metrics["epochs"] == 2 and "test/top1" in metrics  # past the epoch-end collectives, and tested
        assert [p.name for p in (job / "csv").iterdir()] == ["version_0"]  # one rank 0 logged
        assert f"model.freeze_depth={depth}" in (job / ".hydra" / "overrides.yaml").read_text()
    assert not log_dir.exists() or not any(log_dir.rglob("*.yaml"))  # no stray run dirs from the ranks
