"""Resume is exact: a run stopped by SIGTERM mid-epoch and resumed with ``ckpt_path=last``
ends with the same weights, bit for bit, as the run that was never stopped.

Real CLI runs (``python train.py``), the default callbacks and loggers, loader workers,
augmentation on, deterministic settings, CPU. The stop is a real SIGTERM sent by the
process to itself after a chosen step (``helpers.fault_probe.SigtermAt``), so the test asserts
without timing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import ROOT, TINY_MODEL, run_cli, subprocess_pythonpath

RUN = [
    *TINY_MODEL,
    "model.head.dropout=0.2",  # the model draws random numbers too
    "data.batch_size=4",
    "data.num_workers=2",
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "test=false",
    "trainer.log_every_n_steps=1",
]
ENV = {"PYTHONPATH": subprocess_pythonpath(), "OMP_NUM_THREADS": "1"}


def train_with(run_dir: Path, shards: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("train.py", f"hydra.run.dir={run_dir}", f"data.root={shards}", *RUN, *extra, env=ENV)


def final_state(run_dir: Path) -> tuple[int, dict[str, torch.Tensor]]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["global_step"], ckpt["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "ranks, workers", [(1, 2), (1, 0), (2, 1)], ids=["1rank-2workers", "1rank-0workers", "2ranks-gloo"]
)
def test_sigterm_mid_epoch_then_resume_ends_bit_identical_to_an_uninterrupted_run(
    tiny_shards, tmp_path, ranks, workers
):
    ddp = ["trainer=ddp", f"trainer.devices={ranks}", "trainer.accelerator=cpu", "trainer.strategy.timeout.seconds=120"]

    def train(run_dir, shards, *extra):
        return train_with(run_dir, shards, f"data.num_workers={workers}", *(ddp if ranks > 1 else []), *extra)

    whole = train(tmp_path / "whole", tiny_shards)
    assert whole.returncode == 0, whole.stderr[-3000:]
    steps, reference = final_state(tmp_path / "whole")
    train_images = json.loads((tiny_shards / "manifest.json").read_text())["splits"]["train"]["count"]
    assert steps == 3 * (train_images // (4 * ranks))  # last.ckpt is the end of the run

    stop_at = steps // 3 + steps // 6  # mid second epoch (loader, optimiser, RNG mid-flight), a whole epoch after
    first = train(
        tmp_path / "resumed",
        tiny_shards,
        "+callbacks.fault._target_=helpers.fault_probe.SigtermAt",
        f"+callbacks.fault.step={stop_at}",
    )
    assert first.returncode == 143, first.stderr[-3000:]  # not 0: the job did not finish
    stopped, _ = final_state(tmp_path / "resumed")
    # last.ckpt is the state at the signal, not the epoch before; with several ranks they agree on it at
    # the end of the next step (the signal is marked after ResumeCheckpoint's hook in this step ran)
    assert stopped == stop_at + (ranks > 1)

    second = train(tmp_path / "resumed", tiny_shards, "ckpt_path=last")
    assert second.returncode == 0, second.stderr[-3000:]
    resumed_steps, resumed = final_state(tmp_path / "resumed")
    assert resumed_steps == steps
    different = [k for k in reference if not torch.equal(reference[k], resumed[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.slow  # 10-25 s: the fast suite stays under ~10 min on 2 cores
def test_sigterm_from_outside_saves_last_ckpt_and_exits_non_zero(tiny_shards, tmp_path):
    """A local ``kill`` mid-epoch: last.ckpt is written at the step it landed on, exit status 143."""
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "train.py",
        f"hydra.run.dir={run_dir}",
        f"data.root={tiny_shards}",
        *RUN,
        "data.num_workers=0",
        "trainer.max_epochs=50",
        "data.batch_size=2",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    metrics_csv = run_dir / "csv" / "version_0" / "metrics.csv"
    while not (metrics_csv.is_file() and metrics_csv.stat().st_size) and proc.poll() is None:
        time.sleep(0.1)  # training steps are being logged: the signal lands mid-fit
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, output[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] > 0 and ckpt["epoch"] < 50
    assert "stopped by SIGTERM" in output


def test_last_ckpt_is_the_last_epoch_even_when_that_epoch_did_not_improve(tiny_shards, tmp_path):
    """ModelCheckpoint keeps the best; last.ckpt must still be the end of the run (was: the last improvement)."""
    from skuvision.train import run

    from helpers import FAST_TRAIN, compose_train_cfg

    never_better = [
        "callbacks.model_checkpoint.monitor=epoch",
        "callbacks.model_checkpoint.mode=min",
    ]  # only epoch 0 is "best"
    cfg = compose_train_cfg(
        tmp_path, [f"data.root={tiny_shards}", *FAST_TRAIN, *never_better, "test=false", "logger=csv"]
    )
    run(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == cfg.trainer.max_epochs - 1
    assert [p.name for p in (tmp_path / "checkpoints").glob("epoch_*.ckpt")] == ["epoch_000.ckpt"]
