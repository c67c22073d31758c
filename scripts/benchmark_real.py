#!/usr/bin/env python
"""Real phone photos: the recipes for them (and optionally a from-scratch CNN), on the same shards, end to end.

On the public GroceryStoreDataset (Klasson et al., WACV 2019, MIT licence;
github.com/marcusklasson/GroceryStoreDataset, its ``dataset/`` folder: 81 fine classes in 42
coarse ones, 2,640 train / 296 val / 2,485 test photos), end to end, as a user would run it:

1. writes ``grocery.csv`` (path, sku_id = fine class, brand = coarse class, category = top folder
   Fruit/Vegetables/Packages, split = the data set's own train/val/test) and builds shards from it
   with ``skuvision shards build`` (the CSV path);
2. trains each recipe (``--recipes``: experiment names, default ``photos``; ``--variant
   NAME=OVERRIDES`` adds one with its own overrides) on those same shards, one ``python train.py``
   after the other, and optionally ``experiment=scratch`` (ResNet10-T from random init);
3. tabulates fine and coarse test top-1/top-5 (coarse: the predicted SKU's coarse class,
   ``test/brand_top1``), val top-1, s/epoch, each run's minutes and build + run minutes, runs
   ``skuvision compare`` (table + ``compare.png``), plots test top-1 against end-to-end minutes
   (``top1_vs_minutes.png``) and writes the ``benchmark_real`` section of BENCHMARKS.md.

Recipes are compared here on test only once chosen on val (BENCHMARKS.md says which); the table
shows val top-1 beside every row for that reason.

Not in CI (it needs the data set); tests/test_real_photos.py covers the same path on 120 photos.
Minutes per run: see BENCHMARKS.md; ``--limit-per-class`` makes a smoke run.
"""

from __future__ import annotations

import argparse
import csv
import json
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
    p.add_argument(
        "--shard-size", type=int, default=320, help="shards' shorter side (px); 320 is `shards build`'s default"
    )
    p.add_argument(
        "--recipes", default="photos", help="comma-separated experiments (conf/experiment/*.yaml), run in this order"
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=OVERRIDES",
        help="one more run: a name and space-separated train.py overrides (e.g. 'fd3=experiment=photos model.freeze_depth=3')",
    )
    p.add_argument("--image-size", type=int, default=None, help="crop of every recipe run (default: each recipe's)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every recipe run (default: each recipe's)")
    p.add_argument("--scratch-epochs", type=int, default=8, help="epochs of the from-scratch run")
    p.add_argument("--scratch-image-size", type=int, default=96, help="crop of the from-scratch run (its recipe's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="loader workers and shard-build processes")
    p.add_argument("--limit-per-class", type=int, default=0, help="at most N photos per class and split (smoke runs)")
    p.add_argument("--scratch", action="store_true", help="also train experiment=scratch (from random init)")
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


def recipe_runs(args) -> list[tuple[str, list[str]]]:
    """(name, overrides) for every run asked for, in order."""
    runs = [(name, [f"experiment={name}"]) for name in args.recipes.split(",") if name]
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        if not name or not overrides:
            raise SystemExit(f"benchmark_real: error: --variant {spec!r}: use NAME=OVERRIDES")
        runs.append((name, overrides.split()))
    sizes = [f"data.image_size={args.image_size}"] if args.image_size else []
    epochs = [f"trainer.max_epochs={args.epochs}"] if args.epochs else []
    runs = [(name, [*overrides, *sizes, *epochs]) for name, overrides in runs]
    if args.scratch:
        runs.insert(
            0,
            (
                "scratch",
                [
                    "experiment=scratch",
                    f"trainer.max_epochs={args.scratch_epochs}",
                    f"data.image_size={args.scratch_image_size}",
                ],
            ),
        )
    return runs


def run_all(args, work: Path) -> None:
    """CSV, shards (once), then every recipe on them, one run at a time; the state is saved after each."""
    data = Path(args.data).resolve()
    bin_dir = Path(sys.executable).parent
    skuvision = str(bin_dir / "skuvision") if (bin_dir / "skuvision").exists() else "skuvision"
    csv_path, listed = write_csv(data, work, args.limit_per_class)
    shards = work / "shards"
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
            str(args.shard_size),
            "--workers",
            str(args.workers),
        ],
        work / "build.log",
    )
    setup = {
        "build_seconds": build_s,
        "splits_listed": listed,
        "shard_size": args.shard_size,
        "args": vars(args),
        "machine": machine(),
        "runs": [],
    }
    (work / "setup.json").write_text(json.dumps(setup, indent=1))
    common = [
        f"data.root={shards}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        "logger=csv",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
    ]
    for i, (name, overrides) in enumerate(recipe_runs(args)):
        run_dir = work / "runs" / f"{i:02d}-{name}"
        wall = timed(
            [sys.executable, "train.py", *overrides, *common, f"hydra.run.dir={run_dir}"], work / f"{run_dir.name}.log"
        )
        setup["runs"].append({"recipe": name, "overrides": overrides, "run_dir": str(run_dir), "wall_s": wall})
        (work / "setup.json").write_text(json.dumps(setup, indent=1))


def run_config(run_dir: Path) -> dict:
    """The resolved config a run used (its .hydra/config.yaml)."""
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else {}


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Test top-1 against end-to-end minutes (build + run), one labelled point per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in rows:
        ax.scatter(r["total_min"], r["test_top1"])
        ax.annotate(r["recipe"], (r["total_min"], r["test_top1"]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("minutes, shard build + fit + test")
    ax.set_ylabel("fine test top-1")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(work: Path, args) -> int:
    """Tabulate every finished run under ``work`` (also after an interrupted benchmark: ``--report DIR``)."""
    setup = json.loads((work / "setup.json").read_text())
    manifest = json.loads((work / "shards" / "manifest.json").read_text())
    built = {s: manifest["splits"].get(s, {}).get("count", 0) for s in SPLITS}
    rows = []
    for run in setup.get("runs", []):
        run_dir = Path(run["run_dir"])
        if not (run_dir / "metrics.json").is_file():
            continue
        row = run_row(run_dir, run["recipe"], run["wall_s"])
        cfg = run_config(run_dir)
        row["backbone"] = cfg.get("model", {}).get("backbone")
        row["px"] = cfg.get("data", {}).get("image_size")
        row["total_min"] = (setup["build_seconds"] + run["wall_s"]) / 60
        row["overrides"] = run["overrides"]
        rows.append(row)
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
    where = setup.get("machine") or machine()
    plot(rows, work / "top1_vs_minutes.png", f"GroceryStoreDataset, shards at {setup['shard_size']} px; {where}")
    head = (
        "| recipe | backbone | px | freeze_depth | epochs | fine top-1 | fine top-5 | coarse top-1 | coarse top-5 "
        "| val top-1 | s/epoch | run, min | build + run, min |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['backbone']} | {r['px']} | {r['freeze_depth']} | {r['epochs']} | "
            f"{fmt(r['test_top1'])} | {fmt(r['test_top5'])} | {fmt(r['coarse_top1'])} | {fmt(r['coarse_top5'])} | "
            f"{fmt(r['val_top1'])} | {r['s_per_epoch']:.0f} | {r['wall_s'] / 60:.1f} | {r['total_min']:.1f} |"
        )
    listed = setup["splits_listed"]
    split_note = (
        "the data set's own split, honoured through the CSV `split` column"
        if built == listed
        else f"NOT the data set's split: the build gave {built} for {listed} listed (CSV `split` not honoured)"
    )
    run_args = setup["args"]
    variants = "".join(f" --variant '{v}'" for v in run_args.get("variant") or [])
    table = "\n".join(
        [
            "## Real photos: recipes on GroceryStoreDataset (`scripts/benchmark_real.py`)",
            "",
            f"GroceryStoreDataset ({manifest['num_classes']} fine classes; train/val/test {built['train']}/{built['val']}/"
            f"{built['test']}: {split_note}). Shards at short side {setup['shard_size']} px, built in "
            f"{setup['build_seconds'] / 60:.1f} min. Coarse = the predicted SKU's coarse class (`test/brand_top1`). "
            "`run, min` = that run's `python train.py` (fit + test) wall time; `build + run` adds the shard build. "
            f"Machine: {where}, shared with other work while measured.",
            "",
            *lines,
            "",
            f"Command: `python scripts/benchmark_real.py --data DIR --shard-size {setup['shard_size']} "
            f"--recipes {run_args['recipes']}{variants}`; plot `top1_vs_minutes.png` and `skuvision compare` table "
            "(`compare.png`, `compare.md`) in its output dir.",
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
