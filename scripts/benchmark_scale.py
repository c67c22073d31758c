#!/usr/bin/env python
"""Catalogue-scale check: build and load a synthetic catalogue of 2,000 SKUs x 20 images.

Renders the catalogue once (small images; cached under --data-dir), then for a
subset (the first --subset SKUs) and the whole catalogue: builds shards (time,
originals/s, manifest and shard sizes), and starts a fresh process that opens
the shards with SKUDataModule and reads the first training batch (start-up time
and resident memory). Per-image build time and per-SKU start-up cost should be
flat between the two sizes: nothing may grow quadratically with the catalogue.
Also times LabelMap lookups at 100,000 SKUs. Writes the ``benchmark_scale``
section of BENCHMARKS.md; ``--json`` prints the figures.

``--rehearsal --skus 1200,3000,12000``: the month end to end at each catalogue size (issue 20's
rehearsal; stages in scripts/rehearsal.py): build (P=1, and P=4 + merge, checked equal), data
module start-up, one training epoch of a tiny model with an N-class head, evaluate, export,
predict, onboarding the next 5 % of SKUs, compare; wall time and peak RSS per stage, and each
stage's growth from the smallest size to the largest against the growth in SKUs. Writes the
``benchmark_rehearsal`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_common import ROOT, dir_bytes, load_average, machine, publish  # noqa: E402

STARTUP = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import skuvision
from skuvision.config.data_module import shard_data_module
from benchmark_common import rss_mb
imported, rss0 = time.perf_counter(), rss_mb()
dm = shard_data_module(sys.argv[1], image_size=64, batch_size=16, num_workers=0)
n = dm.num_classes
names = [dm.label_map.sku(i) for i in range(n)]  # every index once: O(N) in total
dm.setup("fit")
ready = time.perf_counter()
batch = next(iter(dm.train_dataloader()))
first = time.perf_counter()
print(json.dumps({"import_s": imported - t0, "setup_s": ready - imported, "first_batch_s": first - ready,
                  "num_classes": n, "rss_imports_mb": rss0, "rss_mb": rss_mb(),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(ROOT / "data" / "benchmark"))
    p.add_argument("--skus", default="2000", help="catalogue size; with --rehearsal a comma-separated list")
    p.add_argument("--images-per-sku", type=int, default=None, help="default 20; 10 with --rehearsal")
    p.add_argument("--size", type=int, default=None, help="side of the rendered images (px); default 112, 48")
    p.add_argument("--rehearsal", action="store_true", help="every stage of a month at each --skus size")
    p.add_argument("--image-size", type=int, default=32, help="--rehearsal: the model's input side (px)")
    p.add_argument("--originals", help="--rehearsal: a catalogue `skuvision synth` rendered (enough SKUs)")
    p.add_argument("--from-json", help="--rehearsal: re-render the section from this saved --json output")
    p.add_argument("--partial", nargs="*", help="--from-json: rehearsal dirs of sizes stopped part-way")
    p.add_argument("--onboard-fraction", type=float, default=0.05, help="--rehearsal: new SKUs onboarded")
    p.add_argument("--subset", type=int, default=500, help="smaller catalogue (first N SKUs) to compare against")
    p.add_argument("--workers", type=int, default=2, help="render and build processes")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-markdown", action="store_true")
    args = p.parse_args(argv)
    args.sizes = [int(x) for x in args.skus.split(",")]
    args.skus = max(args.sizes)
    args.images_per_sku = args.images_per_sku or (10 if args.rehearsal else 20)
    args.size = args.size or (48 if args.rehearsal else 112)
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_originals(args) -> Path:
    from skuvision.data.synthetic import write_catalogue

    out = Path(args.data_dir) / f"scale-{args.skus}x{args.images_per_sku}-{args.size}px"
    if (out / "catalogue.csv").is_file():
        return out
    log(f"rendering {args.skus * args.images_per_sku} images into {out} (cached) ...")
    start = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    write_catalogue(out, args.skus, args.images_per_sku, size=args.size, seed=0, workers=args.workers, progress=False)
    log(f"  {time.perf_counter() - start:.0f} s")
    return out


def listing(originals: Path, skus: int) -> Path:
    """A CSV of the first ``skus`` SKUs (make_catalogue(n) is a prefix of make_catalogue(m))."""
    rows = list(csv.DictReader((originals / "catalogue.csv").open()))
    keep, chosen = set(), []
    for row in rows:
        if row["sku_id"] not in keep and len(keep) >= skus:
            continue
        keep.add(row["sku_id"])
        chosen.append({**row, "path": str(originals / row["path"])})
    path = originals.parent / f"{originals.name}-first{skus}.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(chosen[0]))
        w.writeheader()
        w.writerows(chosen)
    return path


def build_and_load(source: Path, out: Path, args) -> dict:
    from skuvision.data.shards import BuildSettings, build_shards

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    manifest = build_shards(source, out, BuildSettings(workers=args.workers), progress=False)
    seconds = time.perf_counter() - start
    images = sum(i["count"] for i in manifest["splits"].values())
    proc = subprocess.run(
        [sys.executable, "-c", STARTUP, str(out)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent,
        check=True,
    )
    load = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "skus": manifest["num_classes"],
        "images": images,
        "build_s": seconds,
        "build_img_s": images / seconds,
        "manifest_bytes": (out / "manifest.json").stat().st_size,
        "shard_bytes": dir_bytes(out),
        "pinned": len(manifest["pinned_splits"]),
        "groups": sum(len(g) for g in manifest["near_duplicate_groups"].values()),
        **load,
    }


def label_map_lookups(n: int = 100_000) -> dict:
    from skuvision.data.labels import LabelMap

    start = time.perf_counter()
    lm = LabelMap.from_dict({"sku_to_index": {f"SKU-{i:08d}": i for i in range(n)}})
    built = time.perf_counter()
    names = [lm.sku(i) for i in range(n)]
    done = time.perf_counter()
    assert names[-1] == f"SKU-{n - 1:08d}"
    return {"skus": n, "from_dict_s": built - start, "all_lookups_s": done - built}


def markdown(res: dict, args) -> str:
    small, big = res["subset"], res["full"]
    lines = [
        "## Catalogue scale — `scripts/benchmark_scale.py`",
        "",
        f"`python scripts/benchmark_scale.py {' '.join(res['argv'])}`".replace(" `", "`")
        + f" — {res['date']}, {res['machine']}. Synthetic catalogue, {args.images_per_sku} images per SKU at "
        f"{args.size} px, built with {args.workers} processes; start-up = a fresh process opening the shards "
        "with SKUDataModule (manifest, label map, every `sku(i)`, `setup('fit')`) and reading one batch.",
        "",
        "| SKUs | images | build s | images/s | manifest | shards | imports s | start-up ms (setup + 1st batch) | RSS MiB (after imports → after 1st batch) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (small, big):
        lines.append(
            f"| {r['skus']:,} | {r['images']:,} | {r['build_s']:.1f} | {r['build_img_s']:.0f} | "
            f"{r['manifest_bytes'] / 1024:.0f} KiB | {r['shard_bytes'] / 2**20:.1f} MiB | "
            f"{r['import_s']:.1f} | {r['setup_s'] * 1e3:.0f} + {r['first_batch_s'] * 1e3:.0f} | "
            f"{r['rss_imports_mb']:.0f} → {r['rss_mb']:.0f} |"
        )
    k = big["skus"] / small["skus"]
    lines += [
        "",
        f"- {k:.0f}× the SKUs: build time ×{big['build_s'] / small['build_s']:.1f}, manifest ×"
        f"{big['manifest_bytes'] / small['manifest_bytes']:.1f}, start-up ×{big['setup_s'] / small['setup_s']:.1f}, "
        f"memory above imports ×{(big['rss_mb'] - big['rss_imports_mb']) / max(1e-9, small['rss_mb'] - small['rss_imports_mb']):.1f}"
        " — linear or better. (Imports are torch/Lightning/litdata, the same at any catalogue size; the RSS "
        "after imports is mostly torch's own libraries.)",
        f"- Manifest per SKU: {big['manifest_bytes'] / big['skus']:.0f} bytes "
        f"(per-SKU split counts, label map with brand/category, {big['pinned']:,} pinned images); "
        f"{big['groups']} near-duplicate groups found among the distinct synthetic views.",
        f"- LabelMap at {res['label_map']['skus']:,} SKUs: from_dict {res['label_map']['from_dict_s'] * 1e3:.0f} ms, "
        f"all {res['label_map']['skus']:,} `sku(i)` lookups {res['label_map']['all_lookups_s'] * 1e3:.0f} ms.",
    ]
    return "\n".join(lines) + "\n"


REHEARSAL_FINDINGS = """\
What the rehearsal looked for (classes x classes or images x classes structures, per-class Python
loops in hot paths) and what was fixed on the way (issue 20, item 4; tests/test_scale_memory.py):

- `skuvision evaluate` kept the logits of the whole split (test images x classes float32: 576 MB at
  12,000 SKUs and 12,000 test images), arg-sorted them whole (int64, twice that) and took a float
  softmax of all of them for brand accuracy. Now each batch is reduced to its top-5 SKUs and top-5
  brands (`export.evaluate.TopK`): images x 5 at any catalogue size.
- Ridge sums (`model.ridge.RidgeStats.add`, run on the whole train split after every training run
  and on the new images of every onboarding) built a one-hot images x classes float64 matrix and
  multiplied it: 484 MB for a 12,000-SKU month's new images, and O(images x classes) work per
  training batch. Now `index_add_`: O(images x features).
- Onboarding scored every test (and val) image against every class at once: images x classes logits
  (12,000 x 12,600 float32 = 605 MB). Now 1,024 rows at a time (`onboarding.task.hits`).
- Before/after of the first two at 12,000 classes: `scripts/benchmark_scale_fixes.py` (below).
- Already sparse, left as they were: confusions (`report.confusions`: only the (true, predicted)
  pairs that occurred, at most one per misclassified image; the plot is 20 x 21), the training
  run's per-SKU counts (two vectors of N), W&B (the 50 worst SKUs), `compare` (one row per run).
"""


def stage_row(stage: str, sizes: list[dict]) -> str:
    """One stage: s / MiB per size, and its growth from the first size to the last that ran it."""
    ran = [r for r in sizes if stage in r["stages"]]
    cells = [
        f"{r['stages'][stage]['s']:.1f} / {r['stages'][stage]['rss_mb']:.0f}" if stage in r["stages"] else "not run"
        for r in sizes
    ]
    if len(ran) < 2:
        return f"| {stage} | {' | '.join(cells)} | — |"
    a, b, k = ran[0]["stages"][stage], ran[-1]["stages"][stage], ran[-1]["skus"] / ran[0]["skus"]
    flag = " **worse than linear**" if b["s"] / a["s"] > 1.2 * k or b["rss_mb"] / a["rss_mb"] > 1.2 * k else ""
    span = f"{ran[0]['skus']:,}→{ran[-1]['skus']:,}"
    return (
        f"| {stage} | {' | '.join(cells)} | {span}: ×{b['s'] / a['s']:.1f} / ×{b['rss_mb'] / a['rss_mb']:.2f}{flag} |"
    )


def outcome_row(r: dict) -> str:
    c, m = r.get("counts", {}), r.get("metrics", {})
    get = lambda run, key: f"{m[run][key]:.3f}" if m.get(run, {}).get(key) is not None else "—"  # noqa: E731
    return (
        f"| {r['skus']:,} | {r.get('images', 0):,} ({c.get('train', 0):,}/{c.get('val', 0):,}/{c.get('test', 0):,}) "
        f"| {r.get('new_skus', '—')} | {get('train', 'test/top1')} | {get('evaluate', 'test/top1')} | "
        f"{get('onboard', 'test/top1_old')} / {get('onboard', 'test/top1_new')} |"
    )


def rehearsal_markdown(res: dict, args) -> str:
    """The rehearsal's tables: seconds and peak RSS per stage and size, growth first -> last size, outcomes."""
    from rehearsal import STAGES

    sizes = res["sizes"]
    head = " | ".join(f"{r['skus']:,} SKUs: s / MiB" for r in sizes)
    lines = [
        "## 12,000-SKU rehearsal — `scripts/benchmark_scale.py --rehearsal`",
        "",
        f"`python scripts/benchmark_scale.py {' '.join(res['argv'])}` — {res['date']}, {res['machine']}, "
        f"load average (1, 5, 15 min) before {res['load_before']}, after {res['load_after']}. Synthetic catalogue, "
        f"{args.images_per_sku} images per SKU rendered at {args.size} px, model input {args.image_size} px; "
        "every stage its own process (wall seconds / peak RSS of it and its reaped children, GNU time's `%M`; "
        "`import torch` alone is ~660 MiB here). Growth flagged when above 1.2× the growth in SKUs.",
        "",
        f"| stage | {head} | growth s / RSS |",
        "|---|" + "---|" * (len(sizes) + 1),
        *[stage_row(stage, sizes) for stage in STAGES],
        "",
        "| SKUs | images (train/val/test) | new SKUs | train.py test top-1 | evaluate top-1 | onboard top-1 old / new |",
        "|---|---|---|---|---|---|",
        *[outcome_row(r) for r in sizes],
    ]
    return "\n".join([*lines, "", REHEARSAL_FINDINGS])


def republish(args) -> int:
    """Re-render the section from a saved ``--json`` run, plus sizes stopped part-way (their stages.json)."""
    res = json.loads(Path(args.from_json).read_text())
    for work in args.partial or []:
        stages = json.loads((Path(work) / "stages.json").read_text())
        manifest = json.loads((Path(work) / "shards" / "manifest.json").read_text())
        counts = {k: v["count"] for k, v in manifest["splits"].items()}
        res["sizes"].append({"skus": manifest["num_classes"], "images": sum(counts.values()), "counts": counts,
                             "stages": stages})  # fmt: skip
    return publish("benchmark_rehearsal", rehearsal_markdown(res, args), res, args)


def run_rehearsal(args, res: dict) -> int:
    from rehearsal import rehearse

    args.skus = round(max(args.sizes) * (1 + args.onboard_fraction))  # the delta's SKUs rendered too
    originals = Path(args.originals) if args.originals else ensure_originals(args)
    res["load_before"] = load_average()
    res["sizes"] = [rehearse(originals, n, args) for n in args.sizes]
    res["load_after"] = load_average()
    return publish("benchmark_rehearsal", rehearsal_markdown(res, args), res, args)


def main(argv=None) -> int:
    args = parse_args(argv)
    import skuvision  # noqa: F401

    res = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "argv": sys.argv[1:] if argv is None else list(argv),
    }
    if args.rehearsal:
        return republish(args) if args.from_json else run_rehearsal(args, res)
    originals = ensure_originals(args)
    for key, n in (("subset", args.subset), ("full", args.skus)):
        log(f"build + load {n} SKUs ...")
        res[key] = build_and_load(listing(originals, n), Path(args.data_dir) / f"scale-shards-{n}", args)
        log(f"  {res[key]['build_s']:.1f} s build, {res[key]['setup_s']:.2f} s setup, {res[key]['rss_mb']:.0f} MiB")
    res["label_map"] = label_map_lookups()
    table = markdown(res, args)
    return publish("benchmark_scale", table, res, args)


if __name__ == "__main__":
    sys.exit(main())
