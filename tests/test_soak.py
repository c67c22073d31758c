"""scripts/soak.py, short: the real training run with the RSS sampler writes consistent JSON and a plot.

Structure only: the memory bound and the speed are the 10,000-step soak's business (BENCHMARKS.md).
"""

from __future__ import annotations

import json
import sys

import pytest

from helpers import ROOT, run_cli

STEPS, EVERY, WORKERS = 160, 10, 2


@pytest.mark.slow  # 40 s: a real 160-step training run; the fast suite's budget is ~10 min
def test_soak_writes_samples_summary_and_plot(tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        "scripts/soak.py",
        f"--steps={STEPS}",
        f"--every={EVERY}",
        "--images-per-sku=30",  # 10 SKUs: ~26 steps per epoch, so several epochs (and checkpoints) pass
        f"--workers={WORKERS}",
        "--no-markdown",
        f"--out={out}",
        f"--data={tmp_path / 'data' / 'shards'}",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar",
        timeout=240,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1 = over the bound: a verdict, not a crash
    last = result.stdout.strip().splitlines()[-3:]
    assert last[0].startswith(f"soak: {STEPS} steps"), last
    assert last[1] == f"soak: outputs in {out} (soak.json, soak_rss.png, checkpoints/, csv/, metrics.json)"
    verdict = "PASS" if result.returncode == 0 else "FAIL"
    assert last[2].startswith(f"soak: {verdict}: largest RSS growth"), last

    results = json.loads((out / "soak.json").read_text())
    samples, summary = results["samples"], results["summary"]
    # a sample every EVERY steps, from the first to the last step
    assert [s["step"] for s in samples] == list(range(EVERY, STEPS + 1, EVERY))
    assert all(s["main_rss_mb"] > 0 for s in samples)
    assert [s["seconds"] for s in samples] == sorted(s["seconds"] for s in samples)

    assert summary["steps"] == STEPS
    assert summary["epochs"] >= 3 and summary["steps_per_epoch"] < STEPS
    # warm-up: the first sample at or after 10 % of the steps and the end of the first epoch
    cut = max(STEPS // 10, summary["steps_per_epoch"])
    assert summary["warmup_step"] == min(s["step"] for s in samples if s["step"] >= cut)
    for key in ("warmup_mb", "end_mb", "peak_mb", "growth_mb", "slope_mb_per_1k_steps"):
        assert key in summary["main"], key
    assert summary["main"]["growth_mb"] == round(summary["main"]["end_mb"] - summary["main"]["warmup_mb"], 2)
    assert summary["main"]["peak_mb"] >= max(summary["main"]["warmup_mb"], summary["main"]["end_mb"])
    assert summary["steps_per_sec"] > 0 and summary["fit_seconds"] > 0

    # the loader workers: WORKERS persistent train workers, sampled in every sample, and the val loader's
    pids = summary["loader_worker_pids"]
    assert len(pids["train"]) == WORKERS and 1 <= len(pids["val"]) <= WORKERS
    assert summary["workers_persisted"] is True
    for pid in pids["train"]:
        assert all(str(pid) in s["procs"] and s["procs"][str(pid)]["role"] == "train" for s in samples)
        worker = summary["workers"][str(pid)]
        assert worker["samples"] == len(samples) and worker["growth_mb"] is not None and worker["name"]
    growths = [summary["main"]["growth_mb"]] + [
        summary["workers"][str(p)]["growth_mb"] for p in pids["train"] + pids["val"]
    ]
    assert summary["max_growth_mb"] == max(g for g in growths if g is not None)
    assert summary["passed"] == (summary["max_growth_mb"] <= summary["bound_mb"]) == (result.returncode == 0)

    # the real run's own outputs, and the plot
    assert (out / "metrics.json").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "soak_rss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --from-json: the plot and the verdict again from soak.json, no training
    (out / "soak_rss.png").unlink()
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import soak

        assert soak.main(["--from-json", str(out / "soak.json"), "--no-markdown"]) == result.returncode
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert (out / "soak_rss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
