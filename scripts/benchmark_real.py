#!/usr/bin/env python
"""Real phone photos: a from-scratch CNN vs the embedded pretrained backbone, frozen to several depths.

On the public GroceryStoreDataset (Klasson et al., WACV 2019, MIT licence;
github.com/marcusklasson/GroceryStoreDataset, its ``dataset/`` folder: 81 fine classes in 42
coarse ones, 2,640 train / 296 val / 2,485 test photos), end to end, as a user would run it:

1. writes ``grocery.csv`` (path, sku_id = fine class, brand = coarse class, category = top folder
   Fruit/Vegetables/Packages, split = the data set's own train/val/test) and builds shards from it
   with ``skuvision shards build`` (the CSV path);
2. trains (a) ``experiment=scratch`` (ResNet10-T from random init) and (b) the recipe for real photos
   (``experiment=photos``: embedded ImageNet EfficientNet-Lite0, FC heads; ``--experiment quickstart``
   for the quickstart's light augmentation) as one Hydra sweep
   over ``model.freeze_depth``, each with ``python train.py``;
3. tabulates fine and coarse test top-1/top-5 (coarse: the predicted SKU's coarse class,
   ``test/brand_top1``), s/epoch and trainable parameters, runs ``skuvision compare`` (table +
   ``compare.png``) and writes the ``benchmark_real`` section of BENCHMARKS.md.

Not in CI (it needs the data set); tests/test_real_photos.py covers the same path on 120 photos.
Minutes per run: see BENCHMARKS.md; ``--limit-per-class`` makes a smoke run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_common import ROOT, machine, publish  # noqa: E402

SPLITS = ("train", "val", "test")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--report",
        metavar="WORKDIR",
        default=None,
        help="only tabulate the finished runs of an earlier (possibly interrupted) benchmark's output dir",
    )
    p.add_argument(
        "--data", metavar="DIR", help="the GroceryStoreDataset's dataset/ folder (train.txt, classes.csv, ...)"
    )
    p.add_argument(
        "--out", default=str(ROOT / "data" / "benchmark_real"), metavar="DIR", help="CSV, shards and runs go here"
    )
    p.add_argument("--image-size", type=int, default=160, help="training/eval crop of the pretrained runs (px)")
    p.add_argument("--depths", default="5,4", help="freeze depths of the pretrained sweep, run in this order")
    p.add_argument(
        "--experiment",
        default="photos",
        help="recipe of the pretrained runs: photos (real-photo augmentation, 10 epochs) or quickstart (light, 8)",
    )
    p.add_argument("--epochs", type=int, default=None, help="epochs of each pretrained run (default: the experiment's)")
    p.add_argument("--scratch-epochs", type=int, default=8, help="epochs of the from-scratch run")
    p.add_argument("--scratch-image-size", type=int, default=96, help="crop of the from-scratch run (its recipe's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="loader workers and shard-build processes")
    p.add_argument("--limit-per-class", type=int, default=0, help="at most N photos per class and split (smoke runs)")
    p.add_argument("--skip-scratch", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-markdown", action="store_true")
    return p.parse_args(argv)


def write_csv(data: Path, out: Path, limit: int) -> tuple[Path, dict]:
    """The data set's own listing as a skuvision CSV; returns it and the photo count per split."""
    if not (data / "classes.csv").is_file():
        raise SystemExit(
            f"benchmark_real: error: {data}/classes.csv not found; pass --data the data set's dataset/ folder"
        )
    with (data / "classes.csv").open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        classes = {int(r[1]): (r[0], r[2]) for r in reader}  # fine id -> (fine name, coarse name)
    rows, counts = [], {}
    for split in SPLITS:
        taken: dict[int, int] = {}
        for line in (data / f"{split}.txt").read_text().splitlines():
            if not line.strip():
                continue
            rel, fine, _coarse = (x.strip() for x in line.split(","))
            fine_id = int(fine)
            if limit and taken.get(fine_id, 0) >= limit:
                continue
            taken[fine_id] = taken.get(fine_id, 0) + 1
            name, coarse = classes[fine_id]
            rows.append(
                {
                    "path": str((data / rel).resolve()),
                    "sku_id": name,
                    "brand": coarse,
                    "category": rel.split("/")[1],
                    "split": split,
                }
            )
        counts[split] = sum(taken.values())
    out.mkdir(parents=True, exist_ok=True)
    path = out / "grocery.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "sku_id", "brand", "category", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path, counts


def timed(cmd: list[str], log: Path) -> float:
    """Run a command with its output to ``log``; its wall time in seconds (stop on failure)."""
    start = time.perf_counter()
    with log.open("w") as fh:
        code = subprocess.run(
            cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "WANDB_MODE": "disabled"}
        ).returncode
    if code:
        raise SystemExit(f"benchmark_real: error: {' '.join(cmd[:4])} ... failed (exit {code}); see {log}")
    return time.perf_counter() - start


def run_row(run_dir: Path, recipe: str, wall: float) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    epochs = max(1, int(m.get("epochs") or 1))
    return {
        "recipe": recipe,
        "freeze_depth": m.get("freeze_depth"),
        "test_top1": m.get("test/top1"),
        "test_top5": m.get("test/top5"),
        "coarse_top1": m.get("test/brand_top1"),
        "coarse_top5": m.get("test/brand_top5"),
        "val_top1": m.get("val/top1"),
        "s_per_epoch": (m.get("train/seconds") or 0) / epochs,
        "epochs": epochs,
        "trainable": m.get("params/trainable"),
        "total": m.get("params/total"),
        "wall_s": wall,
        "run_dir": str(run_dir),
    }


def fmt(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def run_all(args, work: Path) -> None:
    """CSV, shards, the pretrained sweep (cheapest depth first), then the from-scratch run."""
    data = Path(args.data).resolve()
    bin_dir = Path(sys.executable).parent
    skuvision = str(bin_dir / "skuvision") if (bin_dir / "skuvision").exists() else "skuvision"
    csv_path, listed = write_csv(data, work, args.limit_per_class)
    shards = work / "shards"
    shard_size = math.ceil(max(args.image_size, args.scratch_image_size) / 0.875)  # the eval resize, no upscaling later
    build_s = timed(
        [
            skuvision,
            "shards",
            "build",
            "--input",
            str(csv_path),
            "--out",
            str(shards),
            "--size",
            str(shard_size),
            "--workers",
            str(args.workers),
        ],
        work / "build.log",
    )
    (work / "setup.json").write_text(
        json.dumps(
            {"build_seconds": build_s, "splits_listed": listed, "shard_size": shard_size, "args": vars(args)}, indent=1
        )
    )
    common = [
        f"data.root={shards}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        "logger=csv",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
    ]
    timed(
        [
            sys.executable,
            "train.py",
            "-m",
            f"experiment={args.experiment}",
            *common,
            f"hydra.sweep.dir={work / 'pretrained'}",
            f"model.freeze_depth={args.depths}",
            *([f"trainer.max_epochs={args.epochs}"] if args.epochs else []),
            f"data.image_size={args.image_size}",
        ],
        work / "pretrained.log",
    )
    if not args.skip_scratch:
        timed(
            [
                sys.executable,
                "train.py",
                "experiment=scratch",
                *common,
                f"hydra.run.dir={work / 'scratch'}",
                f"trainer.max_epochs={args.scratch_epochs}",
                f"data.image_size={args.scratch_image_size}",
            ],
            work / "scratch.log",
        )


def report(work: Path, args) -> int:
    """Tabulate every finished run under ``work`` (also after an interrupted benchmark: ``--report DIR``)."""
    setup = json.loads((work / "setup.json").read_text())
    run_args = setup["args"]
    manifest = json.loads((work / "shards" / "manifest.json").read_text())
    built = {s: manifest["splits"].get(s, {}).get("count", 0) for s in SPLITS}
    rows = [
        run_row(job, f"pretrained Lite0 ({run_args.get('experiment', 'quickstart')})", _wall(job))
        for job in sorted(p.parent for p in (work / "pretrained").glob("*/metrics.json"))
    ]
    rows.sort(key=lambda r: r["freeze_depth"])
    if (work / "scratch" / "metrics.json").is_file():
        rows.insert(0, run_row(work / "scratch", "scratch (ResNet10-T)", _wall(work / "scratch")))
    if not rows:
        raise SystemExit(f"benchmark_real: error: no finished run under {work}; see its *.log files")
    skuvision = Path(sys.executable).parent / "skuvision"
    timed(
        [
            str(skuvision) if skuvision.exists() else "skuvision",
            "compare",
            *[r["run_dir"] for r in rows],
            "--out",
            str(work),
        ],
        work / "compare.log",
    )
    head = (
        "| recipe | px | freeze_depth | fine top-1 | fine top-5 | coarse top-1 | coarse top-5 | val top-1 "
        "| trainable | s/epoch | epochs | run, min |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        px = run_args["scratch_image_size"] if r["recipe"].startswith("scratch") else run_args["image_size"]
        lines.append(
            f"| {r['recipe']} | {px} | {r['freeze_depth']} | {fmt(r['test_top1'])} | {fmt(r['test_top5'])} | "
            f"{fmt(r['coarse_top1'])} | {fmt(r['coarse_top5'])} | {fmt(r['val_top1'])} | "
            f"{r['trainable'] / 1e6:.2f}M | {r['s_per_epoch']:.0f} | {r['epochs']} | {r['wall_s'] / 60:.1f} |"
        )
    listed = setup["splits_listed"]
    split_note = (
        "the data set's own split, honoured through the CSV `split` column"
        if built == listed
        else f"NOT the data set's split: the build gave {built} for {listed} listed (CSV `split` not honoured)"
    )
    table = "\n".join(
        [
            "## Real photos: from scratch vs the embedded pretrained backbone (`scripts/benchmark_real.py`)",
            "",
            f"GroceryStoreDataset ({manifest['num_classes']} fine classes; train/val/test {built['train']}/{built['val']}/"
            f"{built['test']}: {split_note}). Shards at short side {setup['shard_size']} px, built in "
            f"{setup['build_seconds'] / 60:.1f} min. Coarse = the predicted SKU's coarse class (`test/brand_top1`). "
            f"`run, min` = fit + test of that run, from its log's first to last line. "
            f"Machine: {machine()}, shared with other work while measured.",
            "",
            *lines,
            "",
            f"Command: `python scripts/benchmark_real.py --data DIR --image-size {run_args['image_size']} "
            f"--depths {run_args['depths']} --epochs {run_args['epochs']} --scratch-epochs {run_args['scratch_epochs']}`; "
            "plot and `skuvision compare` table: `compare.png`, `compare.md` in its output dir.",
        ]
    )
    results = {"rows": rows, "splits_built": built, **setup, "out": str(work)}
    (work / "benchmark_real.json").write_text(json.dumps(results, indent=1))
    return publish("benchmark_real", table, results, args)


def _wall(run_dir: Path) -> float:
    """Seconds from a run's first to its last log line (train.log is written from start to test)."""
    log = run_dir / "train.log"
    if not log.is_file():
        return 0.0
    stamps = [line[1:20] for line in log.read_text().splitlines() if line.startswith("[20")]
    if len(stamps) < 2:
        return 0.0
    from datetime import datetime

    first, last = (datetime.strptime(s, "%Y-%m-%d %H:%M:%S") for s in (stamps[0], stamps[-1]))
    return (last - first).total_seconds()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        return report(Path(args.report).resolve(), args)
    if not args.data:
        raise SystemExit("benchmark_real: error: pass --data DIR (the data set's dataset/ folder) or --report WORKDIR")
    work = Path(args.out).resolve() / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    run_all(args, work)
    return report(work, args)


if __name__ == "__main__":
    sys.exit(main())
