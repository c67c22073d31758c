"""A rank that dies (``kill -9``) ends the run in bounded time, and a sweep goes on past that job (issue 14).

The kill is real: ``helpers.fault_probe.KillAt`` sends SIGKILL to one rank after a chosen training step
(mid-epoch), so nothing of that rank's Python runs afterwards, as when the OOM killer strikes.
Each run is bounded by the subprocess timeout: a survivor that waited in a collective for the dead
rank would fail the test by timing out. ``trainer.strategy.timeout.seconds=60`` bounds a survivor
that is stuck rather than told (gloo usually reports the closed connection at once).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest
import torch

from helpers import FAST_TRAIN, TINY_MODEL, run_cli, subprocess_pythonpath

DDP_TINY = [
    "trainer=ddp",
    "trainer.devices=2",
    "trainer.accelerator=cpu",
    "trainer.strategy.timeout.seconds=60",
    "data.synthetic=null",
    *TINY_MODEL,
    "data.batch_size=4",
    "data.num_workers=0",
]  # default callbacks (progress bar included) and loggers: what a real run has


def kill_rank(rank: int | str, step: int, pid_dir: Path) -> list[str]:
    return [
        "+callbacks.fault._target_=helpers.fault_probe.KillAt",
        f"+callbacks.fault.step={step}",
        f"+callbacks.fault.rank={rank}",
        f"+callbacks.fault.pid_dir={pid_dir}",
    ]


def sweep(tmp_path: Path, *overrides: str, timeout: int = 300) -> tuple[Path, str, int]:
    """``train.py -m <overrides>`` into ``tmp_path/sweep``: (sweep dir, output, exit status)."""
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "train.py",
        "-m",
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        env=env(),
        timeout=timeout,
    )
    return sweep_dir, result.stdout + result.stderr, result.returncode


IN_PROCESS = ["data.synthetic=null", *FAST_TRAIN, "logger=csv", "data.image_size=32", "trainer.max_epochs=1"]


def env() -> dict:
    return {"PYTHONPATH": subprocess_pythonpath(), "OMP_NUM_THREADS": "1"}


def wait_gone(pid: int, timeout: float) -> bool:
    """Whether ``pid`` ended (or is a zombie nobody reaped) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.5)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("dead", [1, 0], ids=["rank1-dies", "rank0-dies"])
def test_kill_9_of_one_rank_mid_epoch_ends_the_run_non_zero(tiny_shards, tmp_path, dead):
    pid_dir, log_dir = tmp_path / "pids", tmp_path / "logs"
    # 6 steps per epoch on 2 ranks: step 9 is mid second epoch, after epoch 0's last.ckpt
    result = run_cli(
        "train.py",
        *DDP_TINY,
        f"data.root={tiny_shards}",
        "trainer.max_epochs=3",
        f"paths.log_dir={log_dir}",
        *kill_rank(dead, 9, pid_dir),
        env=env(),
        timeout=300,
    )
    output = result.stdout + result.stderr
    pids = {int(p.stem[4:]): int(p.read_text()) for p in pid_dir.glob("rank*.pid")}
    assert sorted(pids) == [0, 1]
    if dead == 1:  # rank 0 is the launching process: it is told, fails, and exits non-zero
        assert result.returncode not in (0, -9), output[-3000:]
        assert "rank 0 of 2 lost contact with another rank (" in output and "ckpt_path=last" in output
    else:  # the launching process was the one killed; the rank it started must not live on as an orphan
        assert result.returncode == -9
        assert wait_gone(pids[1], timeout=90), f"rank 1 (pid {pids[1]}) outlived rank 0 by over 90 s"
    assert "epoch=2" not in output  # the run did not go on with one rank

    (ckpt,) = log_dir.rglob("last.ckpt")  # epoch 0's state stays whole and loadable
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["global_step"] == 6 and state["epoch"] == 0


@pytest.mark.slow
def test_a_sweep_reports_the_job_whose_rank_died_and_runs_the_next(tiny_shards, tmp_path):
    sweep_dir, output, status = sweep(
        tmp_path,
        *DDP_TINY,
        f"data.root={tiny_shards}",
        "trainer.max_epochs=2",
        *kill_rank("1,9", 3, tmp_path / "pids"),  # job 0: rank 1 dies at step 3; job 1: no rank 9, no kill
        timeout=480,
    )
    assert status == 1, output[-4000:]
    assert output.count("Launching 2 jobs locally") == 1

    failed = json.loads((sweep_dir / "0" / "FAILED.json").read_text())
    assert failed["job"] == 0 and "+callbacks.fault.rank=1" in failed["overrides"]
    assert "DDP ranks failed" in failed["reason"]
    assert not (sweep_dir / "0" / "metrics.json").exists()

    metrics = json.loads((sweep_dir / "1" / "metrics.json").read_text())  # the next job ran, whole
    assert metrics["epochs"] == 2 and metrics["world_size"] == 2 and "test/top1" in metrics
    assert not (sweep_dir / "1" / "FAILED.json").exists()

    last = [line for line in output.splitlines() if line.strip()][-2:]  # the sweep's result is its last lines
    assert last[0].startswith("skuvision: sweep job 0 failed (") and "DDP ranks failed" in last[0]
    assert last[1] == f"skuvision: sweep: 1 of 2 job(s) failed; outputs in {sweep_dir}"


@pytest.mark.slow  # 10-25 s: the fast suite stays under ~10 min on 2 cores
def test_a_sweep_job_with_bad_input_is_reported_and_the_next_job_runs(tiny_shards, tmp_path):
    """In-process jobs (one device): a job's one-line error no longer ends the sweep there."""
    missing = tmp_path / "no-shards-here"
    sweep_dir, output, status = sweep(tmp_path, f"data.root={missing},{tiny_shards}", *IN_PROCESS)
    assert status == 1, output[-3000:]
    assert "Traceback" not in output
    failed = json.loads((sweep_dir / "0" / "FAILED.json").read_text())
    assert str(missing) in failed["reason"] and "manifest" in failed["reason"]
    assert json.loads((sweep_dir / "1" / "metrics.json").read_text())["epochs"] == 1
    last = [line for line in output.splitlines() if line.strip()][-2:]
    assert last[0].startswith(f"skuvision: sweep job 0 failed (data.root={missing} ")
    assert last[1] == f"skuvision: sweep: 1 of 2 job(s) failed; outputs in {sweep_dir}"


@pytest.mark.slow  # 10-25 s: the fast suite stays under ~10 min on 2 cores
def test_a_sweep_whose_jobs_all_succeed_ends_with_where_they_are(tiny_shards, tmp_path):
    sweep_dir, output, status = sweep(tmp_path, f"data.root={tiny_shards}", *IN_PROCESS, "model.freeze_depth=0,5")
    assert status == 0, output[-3000:]
    assert not list(sweep_dir.glob("*/FAILED.json"))
    assert [line for line in output.splitlines() if line.strip()][-1] == (
        f"skuvision: sweep: 2 job(s) done; outputs in {sweep_dir}"
    )


@pytest.mark.slow
def test_ctrl_c_during_a_ddp_sweep_job_ends_the_sweep(tiny_shards, tmp_path):
    """An interrupted job is the end of the sweep, not a failed job to go past."""
    import os
    import signal
    import subprocess
    import sys

    from helpers import ROOT

    sweep_dir, pid_dir = tmp_path / "sweep", tmp_path / "pids"
    command = [
        sys.executable,
        "train.py",
        "-m",
        *DDP_TINY,
        f"data.root={tiny_shards}",
        "trainer.max_epochs=50",
        "model.freeze_depth=0,1",
        *kill_rank(9, 10**6, pid_dir),  # no rank 9: only the pid files, to see job 0 training
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    proc = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env()}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 240
    while len(list(pid_dir.glob("rank*.pid"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert len(list(pid_dir.glob("rank*.pid"))) == 2, "job 0 never started training"
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends the sweep (the terminal sends it to the ranks too)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode != 0, output[-3000:]
    assert not (sweep_dir / "1").exists(), "job 1 started after Ctrl-C"
    assert not (sweep_dir / "0" / "FAILED.json").exists()  # interrupted, not failed
