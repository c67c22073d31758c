"""The catalogue-scale rehearsal's stages: every command a month runs, each in its own process.

``scripts/benchmark_scale.py --rehearsal`` calls :func:`rehearse` once per catalogue size. Each stage
is the command line a user types (``skuvision shards build``, ``python train.py``, ...), run as a
child process under GNU time so that its wall time and its peak resident memory (the child's
own peak, or that of any of its reaped children, loader workers included) are the stage's alone.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKUVISION = [sys.executable, "-m", "skuvision.cli"]
TIME = "/usr/bin/time"  # GNU time: each stage's peak RSS (apt-get install time)
STAGES = ["build P=1", "build P=4 + merge", "data module start-up", "train 1 epoch", "evaluate", "export",
          "predict", "build delta", "onboard +5 %", "compare"]  # fmt: skip


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_stage(cmd: list[str], log_path: Path) -> dict:
    """Runs one command to completion: wall seconds and peak RSS (MiB) of it and its reaped children.

    The peak comes from GNU time (``%M``), which forks from its own small process: a child forked
    from this one (~1 GB of torch after the render) would count this process's pages until its
    exec, and Linux keeps that as the child's ``ru_maxrss`` (``os.wait4`` read ~1 GB for a 400-image
    build). Not ``RUSAGE_CHILDREN`` either: that is a running maximum over every child ever reaped.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "scripts"), os.environ.get("PYTHONPATH", "")]),
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    peak_file = log_path.with_suffix(".maxrss")
    start = time.perf_counter()
    with log_path.open("w") as fh:
        proc = subprocess.run([TIME, "-f", "%M", "-o", str(peak_file), *cmd], cwd=ROOT, env=env, stdout=fh,
                              stderr=subprocess.STDOUT)  # fmt: skip
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode} (log {log_path}):\n{tail}")
    return {"s": seconds, "rss_mb": int(peak_file.read_text().split()[-1]) / 1024}


def run_stages(cmds: list[list[str]], log_dir: Path, name: str) -> dict:
    """Several commands as one stage (the P partitions and the merge): seconds add up, the peak is the largest."""
    parts = [run_stage(cmd, log_dir / f"{name}-{i}.log") for i, cmd in enumerate(cmds)]
    return {"s": sum(p["s"] for p in parts), "rss_mb": max(p["rss_mb"] for p in parts)}


def write_listing(originals: Path, lo: int, hi: int, out: Path) -> Path:
    """A build's CSV: the SKUs ``lo..hi-1`` of the rendered catalogue (its SKU order), absolute paths."""
    rows, seen = [], []
    for row in csv.DictReader((originals / "catalogue.csv").open()):
        if not seen or seen[-1] != row["sku_id"]:
            seen.append(row["sku_id"])
        if lo < len(seen) <= hi:
            rows.append({**row, "path": str(originals / row["path"])})
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def predict_listing(listing: Path, out: Path) -> Path:
    """One image per SKU: what ``skuvision predict`` reads, so its input grows with the catalogue."""
    rows, seen = [], set()
    for row in csv.DictReader(listing.open()):
        if row["sku_id"] not in seen:
            seen.add(row["sku_id"])
            rows.append({"path": row["path"]})
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path"])
        writer.writeheader()
        writer.writerows(rows)
    return out


def same_build(a: Path, b: Path) -> dict:
    """P=1 and P=4 must agree: the label map and every split's sample count (chunk layout may differ)."""
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    counts = lambda m: {k: v["count"] for k, v in m["splits"].items()}  # noqa: E731
    if ma["label_map"] != mb["label_map"] or counts(ma) != counts(mb):
        raise RuntimeError(f"P=1 and P=4 builds differ: {counts(ma)} vs {counts(mb)}, or their label maps")
    return {"num_classes": ma["num_classes"], "counts": counts(ma), "images": sum(counts(ma).values())}


def build_cmds(listing: Path, out: Path, args, extra: tuple[str, ...] = ()) -> list[list[str]]:
    base = [*SKUVISION, "shards", "build", "--input", str(listing), "--size", str(args.size),
            "--workers", str(args.workers), "--quiet", *extra]  # fmt: skip
    return [[*base, "--out", str(out)]]


def partition_cmds(listing: Path, out: Path, args, parts: int = 4) -> list[list[str]]:
    (cmd,) = build_cmds(listing, out, args)
    cmds = [[*cmd, "--partitions", str(parts), "--partition", str(k)] for k in range(parts)]
    return [*cmds, [*SKUVISION, "shards", "merge", str(out), "--quiet"]]


def train_cmd(shards: Path, run_dir: Path, args) -> list[str]:
    """One epoch of the tests' tiny model (resnet10t from random init, one small hidden layer) with an N-class head."""
    return [sys.executable, "train.py", f"hydra.run.dir={run_dir}", f"data.root={shards}",
             "model.backbone=resnet10t", "model.pretrained=false", "model.freeze_depth=0",
             "model.head.hidden_dims=[64]", f"data.image_size={args.image_size}", "data.batch_size=64",
             f"data.num_workers={min(1, args.workers - 1)}", "trainer.max_epochs=1", "logger=csv",
             "trainer.enable_progress_bar=false", "~callbacks.progress_bar"]  # fmt: skip


class Recorded(dict):
    """Stage results that land in ``path`` as each stage ends: a run stopped part-way (the 12,000-SKU
    size takes about an hour on two cores) still leaves the stages it finished."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def __setitem__(self, key: str, value: dict) -> None:
        super().__setitem__(key, value)
        self.path.write_text(json.dumps(self, indent=1))


def best_checkpoint(run_dir: Path) -> Path:
    return Path(json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"])


def model_stages(shards: Path, work: Path, listing: Path, args, res: dict) -> Path:
    """Train, evaluate, export, predict on one catalogue size; returns the trained checkpoint."""
    from benchmark_scale import STARTUP

    logs = work / "logs"
    res["data module start-up"] = run_stage([sys.executable, "-c", STARTUP, str(shards)], logs / "startup.log")
    res["train 1 epoch"] = run_stage(train_cmd(shards, work / "train", args), logs / "train.log")
    ckpt = best_checkpoint(work / "train")
    evaluate = [*SKUVISION, "evaluate", str(ckpt), str(shards), "--split", "test", "--out", str(work / "eval")]
    res["evaluate"] = run_stage(evaluate, logs / "evaluate.log")
    export = [*SKUVISION, "export", str(ckpt), "--out", str(work / "export"), "--calibration", str(shards)]
    res["export"] = run_stage(export, logs / "export.log")
    images = predict_listing(listing, work / "predict-input.csv")
    predict = [*SKUVISION, "predict", str(work / "export"), str(images), "--out", str(work / "predictions.csv")]
    res["predict"] = run_stage(predict, logs / "predict.log")
    return ckpt


def rehearse(originals: Path, n: int, args) -> dict:
    """Every stage for a catalogue of the first ``n`` SKUs, then onboarding the next 5 % of them."""
    originals, work = originals.resolve(), Path(args.data_dir).resolve() / f"rehearsal-{n}"
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    logs, res = work / "logs", Recorded(work / "stages.json")
    listing = write_listing(originals, 0, n, work / "base.csv")
    new = max(1, round(n * args.onboard_fraction))
    delta_listing = write_listing(originals, n, n + new, work / "delta.csv")
    log(f"{n} SKUs: build P=1 ...")
    res["build P=1"] = run_stages(build_cmds(listing, work / "shards", args), logs, "build-p1")
    log(f"{n} SKUs: build P=4 + merge ...")
    res["build P=4 + merge"] = run_stages(partition_cmds(listing, work / "shards-p4", args), logs, "build-p4")
    data = same_build(work / "shards", work / "shards-p4")
    ckpt = model_stages(work / "shards", work, listing, args, res)
    log(f"{n} SKUs: onboard {new} new SKUs ...")
    label_map = ("--label-map", str(work / "shards" / "manifest.json"))
    res["build delta"] = run_stages(build_cmds(delta_listing, work / "delta", args, label_map), logs, "delta")
    onboard = [sys.executable, "onboard.py", f"onboard.from={ckpt}", f"data.root={work / 'delta'}",
               f"hydra.run.dir={work / 'onboard'}"]  # fmt: skip
    res["onboard +5 %"] = run_stage(onboard, logs / "onboard.log")
    compare = [*SKUVISION, "compare", str(work / "train"), str(work / "onboard"), "--out", str(work / "compare")]
    res["compare"] = run_stage(compare, logs / "compare.log")
    metrics = {k: json.loads((work / d / "metrics.json").read_text()) for k, d in
               (("train", "train"), ("evaluate", "eval"), ("onboard", "onboard"))}  # fmt: skip
    return {"skus": n, "new_skus": new, **data, "stages": dict(res), "metrics": metrics}
