"""Checkpoints are whole or absent; a resume takes the newest one that loads; an unwritable
checkpoint dir is one line before the first step.

The failure in the middle of a write is real and deterministic: the resumed run gets a
file-size limit (RLIMIT_FSIZE) below a checkpoint's size, so the kernel refuses its next
checkpoint write half-way (EFBIG, as a full disk or quota would; Python ignores the SIGXFSZ
that would otherwise kill it). A SIGKILL at that point leaves the target the same way: only
``os.replace`` ever touches ``last.ckpt``, and only with a complete file.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import pytest
import torch

from skuvision.checkpoints import loads, newest_loadable
from skuvision.train import resolve_checkpoint

from helpers import QUIET, ROOT, TINY_MODEL, run_cli

RUN = [*TINY_MODEL, "data.batch_size=8", "data.num_workers=0", "test=false", *QUIET]


def test_resume_takes_last_ckpt_or_else_the_newest_checkpoint_that_loads(tmp_path):
    torch.save({"global_step": 5}, tmp_path / "epoch_000.ckpt")
    torch.save({"global_step": 9, "w": torch.full((1000,), 7, dtype=torch.uint8)}, tmp_path / "epoch_001.ckpt")
    torch.save({"global_step": 12}, tmp_path / "last.ckpt")
    assert newest_loadable(tmp_path) == tmp_path / "last.ckpt"
    data = (tmp_path / "last.ckpt").read_bytes()
    (tmp_path / "last.ckpt").write_bytes(data[: len(data) // 2])  # truncated, and the newest file
    assert not loads(tmp_path / "last.ckpt")
    assert newest_loadable(tmp_path) == tmp_path / "epoch_001.ckpt"
    flipped = bytearray((tmp_path / "epoch_001.ckpt").read_bytes())
    flipped[bytes(flipped).index(b"\x07" * 1000) + 500] ^= 0x10  # one bit in the weights: that entry's CRC fails
    (tmp_path / "epoch_001.ckpt").write_bytes(bytes(flipped))
    assert resolve_checkpoint("last", tmp_path, str(tmp_path)) == str(tmp_path / "epoch_000.ckpt")


def _limit_file_size(limit: int, killed: bool = True):
    """A file size limit: past it the kernel kills the writer (SIGXFSZ), or, with that signal ignored,
    the write fails with EFBIG, as a full disk fails it with ENOSPC."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        if not killed:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


@pytest.mark.slow
@pytest.mark.parametrize("killed", [True, False], ids=["killed-mid-write", "write-fails-as-on-a-full-disk"])
def test_a_write_cut_off_in_the_middle_of_a_checkpoint_leaves_the_previous_last_ckpt(tiny_shards, tmp_path, killed):
    run_dir = tmp_path / "run"
    base = ["train.py", f"hydra.run.dir={run_dir}", f"data.root={tiny_shards}", *RUN, "~callbacks.model_checkpoint"]
    first = run_cli(*base, "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    size = last.stat().st_size

    cut = subprocess.run(
        [sys.executable, *base, "trainer.max_epochs=2", "ckpt_path=last"],
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size(size // 2, killed),
    )
    output = cut.stdout + cut.stderr
    assert cut.returncode != 0 and "epoch end: saved" not in output, output[-3000:]  # failed inside the save
    if not killed:  # the process lives to say so: one line naming the file and what to do
        assert cut.returncode == 2 and "Traceback" not in output, output[-3000:]
        (line,) = [x for x in output.splitlines() if x.startswith("skuvision: error:")]
        assert f"{last}: checkpoint not written (File too large)" in line and "ckpt_path=last" in line, line
        assert not list(last.parent.glob(".*.tmp*"))  # the partial temporary file is gone
    assert loads(last), "last.ckpt was left truncated"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 0  # the previous state, whole

    again = run_cli(*base, "trainer.max_epochs=2", "ckpt_path=last")
    assert again.returncode == 0, again.stderr[-3000:]
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 1


def test_an_unwritable_checkpoint_dir_stops_before_the_first_step_with_one_line(tiny_shards, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the checkpoint dir's parent should be")
    result = run_cli(
        "train.py",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.root={tiny_shards}",
        *RUN,
        f"callbacks.resume_checkpoint.dirpath={blocker}/checkpoints",
        "trainer.max_epochs=1",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("skuvision: error:")]
    assert len(lines) == 1 and "callbacks.resume_checkpoint.dirpath" in lines[0] and str(blocker) in lines[0], (
        result.stderr[-3000:]
    )
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "run").glob("csv/*/metrics.csv")) or "train/loss" not in "".join(
        p.read_text() for p in (tmp_path / "run").glob("csv/*/metrics.csv")
    )  # no step ran
