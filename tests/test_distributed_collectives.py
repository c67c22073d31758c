"""Multi-rank runs with the DEFAULT callbacks and loggers: collectives pair up in the same order on every rank.

A rank-0-only callback (the progress bar) used to compute the synced epoch metrics on rank 0
while rank 1 went straight to the resume save's barrier: both ranks hung at the end of epoch 0.
Nothing here turns the progress bar, W&B (offline) or the CSV logger off (nor in
test_distributed_sweep.py, the same for a local ``-m`` sweep with per-job DDP). A hang fails fast: the
collective timeout is 60 s (``trainer.strategy.timeout.seconds``) and every process has a bound.
"""

from __future__ import annotations

import json

import pytest
from test_distributed_entry import ENTRY, TORCHRUN, overrides_arg, run, sagemaker_env

from helpers import TINY_MODEL

COLLECTIVE_TIMEOUT = "trainer.strategy.timeout.seconds=60"
DEFAULTS_ON = [  # tiny model; default callbacks (progress bar, checkpoints, report) and loggers (csv + wandb)
    "data.root=null",
    *TINY_MODEL,
    "data.batch_size=4",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
]


@pytest.mark.slow
@pytest.mark.parametrize("trainer, stub", [("smddp", True), ("ddp", False)])
def test_container_entry_on_two_ranks_with_default_callbacks_trains_tests_and_exports_once(
    trainer, stub, tiny_shards, tmp_path
):
    overrides = [*DEFAULTS_ON, f"trainer={trainer}", COLLECTIVE_TIMEOUT]
    env = sagemaker_env(tmp_path, tiny_shards, stub=stub)
    result = run([*TORCHRUN, *ENTRY, *overrides_arg(*overrides)], env, timeout=300)
    assert result.returncode == 0, result.output[-5000:]

    model_dir = tmp_path / "model"
    assert {"label_map.json", "metrics.json", "model.ckpt", "model.onnx"} <= {p.name for p in model_dir.iterdir()}
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["world_size"] == 2 and 0.0 <= metrics["test/top1"] <= 1.0
    run_dir = tmp_path / "output" / "run"
    assert [p.name for p in (run_dir / "csv").iterdir()] == ["version_0"]
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # one W&B run: rank 0's
    assert result.output.count("[skuvision] test ") == 1  # the test summary line, printed by rank 0 only


@pytest.mark.slow
def test_a_split_smaller_than_ranks_times_batch_stops_with_one_line_before_training(tiny_shards, tmp_path):
    manifest = json.loads((tiny_shards / "manifest.json").read_text())
    val = manifest["splits"]["val"]["count"]
    batch = val // 2 + 1  # 2 ranks x batch > val images: one rank would get no batch
    overrides = [*DEFAULTS_ON, "trainer=ddp", COLLECTIVE_TIMEOUT, f"data.eval_batch_size={batch}"]
    result = run(
        [*TORCHRUN, *ENTRY, *overrides_arg(*overrides)], sagemaker_env(tmp_path, tiny_shards, stub=False), timeout=240
    )
    assert result.returncode != 0
    lines = sorted({line for line in result.stderr.splitlines() if line.startswith("skuvision: error:")})
    assert len(lines) == 1, result.output[-4000:]
    assert f"'val' split has {val} images" in lines[0] and f"2 ranks x batch {batch}" in lines[0], lines[0]
    assert "data.eval_batch_size" in lines[0]
    # no rank raised a traceback (torchrun itself still reports that its children exited non-zero)
    assert "skuvision/" not in result.stderr.split("ChildFailedError")[0] and "zero length" not in result.output
    assert "DataError" not in result.output
    assert "Epoch 0" not in result.output and not (tmp_path / "checkpoints").exists()
