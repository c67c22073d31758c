#!/usr/bin/env python
"""Monthly onboarding vs full retrain, measured side by side in one run (issue 11).

A base model (the quickstart recipe: EfficientNet-Lite0, ImageNet weights, stages 4-5 + head
trained) learns N SKUs; then +5 % new SKUs arrive, taken from the same brand families as old
ones (a new flavour of an existing brand: the hard case). Compared, on the same machine:

  (a) full retrain on all SKUs from the same starting point (ImageNet weights), as today;
  (b) ``finetune``: grown head trained on cached features of new images + replay;
  (c) ``closed_form`` (class means, old rows bit-identical) and (d) ``closed_form`` ridge.

Per method: old-SKU, new-SKU and all-SKU test top-1, wall seconds of the whole command and of
the training side alone, images pushed through the backbone for training, and ratios to (a).
Then ten successive closed-form rounds (each adding as many SKUs again) report the original
SKUs' top-1 after each round: drift. ``--data DIR`` runs the comparison on the
GroceryStoreDataset instead (~5 % of its classes held out as new; no drift rounds). ``--data DIR
--holdout-every 4 --per-round 2 --drift-only``: real-photo drift instead: 20 classes held out, ten
chained ridge rounds (fixed penalty, and penalty on val), each evaluated on test features computed
once (``onboard.test=false``), then the 4-class delta with each solver and all 20 classes at once.
A third chain carries RanPAC's projection (its first round replays every base train image, the
projected sums a base trained with ``callbacks.ridge_statistics.projection`` would leave). ``--retrain``
adds the reference the drift goal wants: the full retrain on all classes from ImageNet (the recipe's
epochs) and warm starts from the last round's checkpoint (``init_from``, ``--warm-epochs``), each tested
on the same images (centre crop, as the chains are evaluated).
Writes the ``benchmark_onboarding`` section of BENCHMARKS.md and a PNG beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_common import ROOT, load_average, machine, publish  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(ROOT / "data" / "benchmark_onboarding"), help="scratch dir (wiped)")
    p.add_argument("--skus", type=int, default=40, help="SKUs of the base model")
    p.add_argument("--new-fraction", type=float, default=0.05)
    p.add_argument("--images-per-sku", type=int, default=30)
    p.add_argument("--size", type=int, default=128, help="rendered and trained image side (px)")
    p.add_argument("--epochs", type=int, default=6, help="epochs of the base model and of the full retrain")
    p.add_argument("--replay", type=int, default=5, help="onboard.replay_per_sku")
    p.add_argument("--projection", type=int, default=4096, help="onboard.projection of the RanPAC variant")
    p.add_argument("--rounds", type=int, default=10, help="successive closed-form rounds for the drift check")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--data", default=None, help="GroceryStoreDataset dir (train.txt/val.txt/test.txt) instead")
    p.add_argument(
        "--holdout-every",
        type=int,
        default=20,
        help="--data: classes whose fine id %% N == N-1 are held out as new (20: 4 classes; 4: 20 classes)",
    )
    p.add_argument(
        "--per-round",
        type=int,
        default=0,
        help="--data: held-out classes onboarded per drift round, in fine-id order (0: all in one round, no drift)",
    )
    p.add_argument(
        "--drift-only",
        action="store_true",
        help="--data: only the base model and the chained ridge rounds (no retrain, no other variants)",
    )
    p.add_argument("--no-variants", action="store_true", help="--drift-only: skip the 4-class delta's solvers")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="--drift-only: also the full retrain on all classes from ImageNet and warm starts from the last round",
    )
    p.add_argument(
        "--retrain-every",
        type=int,
        default=0,
        help="--drift-only: also a chain that runs a warm-started retrain on every class so far after every K "
        "ridge rounds and onboards the next rounds from it (0: off)",
    )
    p.add_argument("--retrain-every-epochs", type=int, default=2, help="--retrain-every: epochs of each retrain")
    p.add_argument(
        "--warm-epochs",
        default="2,4",
        help="--retrain: epochs of each warm-started retrain (init_from the last round's checkpoint)",
    )
    p.add_argument("--base-only", action="store_true", help="stop after the shards and the base model")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep --work: reuse its shards and finished training runs (wall.json beside metrics.json) when present",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-markdown", action="store_true")
    return p.parse_args(argv)


# -- catalogues --------------------------------------------------------------------------------
def synthetic_rows(args, out: Path) -> tuple[list[dict], list[list[dict]]]:
    """(old rows, new rows per round). Round 1's SKUs are siblings of old SKUs (same brand family)."""
    from skuvision.data.synthetic import make_catalogue, write_catalogue

    per_round = max(1, round(args.skus * args.new_fraction))
    total = args.skus + per_round * args.rounds
    specs = make_catalogue(total + 8, args.seed)
    families: dict[int, list] = {}
    for spec in specs:
        families.setdefault(spec.family, []).append(spec)
    old, siblings, rest = [], [], []
    for members in families.values():
        if len(old) >= args.skus:
            rest += members
        elif len(members) >= 3:  # hold out the last member; its family stays in the base
            old += members[:-1]
            siblings.append(members[-1])
        else:
            old += members
    rest = old[args.skus :] + rest
    old = old[: args.skus]
    new_pool = (siblings + rest)[: per_round * args.rounds]
    if len(siblings) < per_round:
        raise SystemExit(f"only {len(siblings)} same-family SKUs for {per_round} new; raise --skus")
    write_catalogue(out, len(specs), args.images_per_sku, size=args.size, seed=args.seed, workers=2, progress=False)
    by_sku: dict[str, list[dict]] = {}
    for row in csv.DictReader((out / "catalogue.csv").open()):
        by_sku.setdefault(row["sku_id"], []).append({**row, "path": str(out / row["path"])})
    rows = [r for s in old for r in by_sku[s.sku_id]]
    rounds = [
        [r for s in new_pool[i : i + per_round] for r in by_sku[s.sku_id]] for i in range(0, len(new_pool), per_round)
    ]
    return rows, rounds


def grocery_rows(args) -> tuple[list[dict], list[list[dict]]]:
    """GroceryStoreDataset with its own splits; every ``--holdout-every``-th class (by fine id) is new:
    one month's delta, or ``--per-round`` of them per drift round in fine-id order."""
    data = Path(args.data)
    names = {}
    with (data / "classes.csv").open() as fh:
        for row in csv.reader(fh):
            if row and row[1].strip().isdigit():
                names[int(row[1])] = (row[0].strip(), row[2].strip())
    every = args.holdout_every
    old, new = [], {}
    for split in ("train", "val", "test"):
        for line in (data / f"{split}.txt").read_text().splitlines():
            if not line.strip():
                continue
            path, fine, _ = (x.strip() for x in line.split(","))
            sku, brand = names[int(fine)]
            row = {"path": str(data / path), "sku_id": sku, "brand": brand, "category": brand, "split": split}
            if int(fine) % every == every - 1:
                new.setdefault(int(fine), []).append(row)
            else:
                old.append(row)
    held = sorted(new)
    per_round = args.per_round or len(held)
    return old, [[r for f in held[i : i + per_round] for r in new[f]] for i in range(0, len(held), per_round)]


def build_once(rows: list[dict], listing: Path, out: Path, base: Path | None, size: int) -> dict:
    """``build``, or the manifest of an earlier build of the same shards (``--resume``)."""
    if (out / "manifest.json").is_file():
        return json.loads((out / "manifest.json").read_text())
    return build(rows, listing, out, base, size)


def write_listing(rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def build(rows: list[dict], listing: Path, out: Path, base: Path | None, size: int) -> dict:
    from skuvision.data.shards import BuildSettings, build_shards

    label_map = str(base / "manifest.json") if base else None
    return build_shards(
        write_listing(rows, listing),
        out,
        BuildSettings(size=size, val=0.15, test=0.15, workers=2),
        label_map_path=label_map,
        progress=False,
    )


# -- runs ---------------------------------------------------------------------------------------
def train_py(run_dir: Path, *overrides: str) -> tuple[dict, float]:
    """Run ``python train.py`` in a fresh process; (metrics.json, wall seconds)."""
    return run_script("train.py", run_dir, "logger=csv", *overrides)


def train_once(args, run_dir: Path, *overrides: str) -> tuple[dict, float]:
    """``train_py``, or (``--resume``) the metrics and wall seconds of an earlier finished run in ``run_dir``."""
    if args.resume and (run_dir / "wall.json").is_file():
        wall = json.loads((run_dir / "wall.json").read_text())["wall_s"]
        return json.loads((run_dir / "metrics.json").read_text()), wall
    m, wall = train_py(run_dir, *overrides)
    (run_dir / "wall.json").write_text(json.dumps({"wall_s": wall}))
    return m, wall


def slug(name: str) -> str:
    """A table row's name as its run directory's name."""
    return "".join(c if c.isalnum() else "_" for c in name)


def onboard_py(run_dir: Path, *overrides: str) -> tuple[dict, float]:
    """Run ``python onboard.py`` in a fresh process (image size from the checkpoint); (metrics.json, wall seconds)."""
    return run_script("onboard.py", run_dir, *overrides)


def run_script(script: str, run_dir: Path, *overrides: str) -> tuple[dict, float]:
    start = time.perf_counter()
    cmd = [sys.executable, str(ROOT / script), f"hydra.run.dir={run_dir}", *overrides]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return json.loads((run_dir / "metrics.json").read_text()), wall


def per_sku_top1(run_dir: Path, skus: set[str]) -> float:
    rows = [r for r in csv.DictReader((run_dir / "per_sku.csv").open()) if r["sku_id"] in skus]
    return sum(int(r["correct"]) for r in rows) / max(1, sum(int(r["test_images"]) for r in rows))


def main(argv=None) -> int:
    args = parse_args(argv)
    from skuvision.quiet import quiet_library_noise

    quiet_library_noise()  # the in-process evaluator opens one litdata dataset per shard set
    work = Path(args.work)
    if not args.resume:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    old_rows, rounds = grocery_rows(args) if args.data else synthetic_rows(args, work / "images")
    if args.data:
        args.rounds = min(args.rounds, len(rounds)) if args.per_round else 1
    old_skus = sorted({r["sku_id"] for r in old_rows})
    new_skus = sorted({r["sku_id"] for r in rounds[0]})
    base = work / "shards" / "base"
    base_manifest = build_once(old_rows, work / "base.csv", base, None, args.size)
    deltas, previous = [], base
    for i, rows in enumerate(rounds[: args.rounds], 1):
        deltas.append(work / "shards" / f"delta{i:02d}")
        build_once(rows, work / f"delta{i:02d}.csv", deltas[-1], previous, args.size)
        previous = deltas[-1]
    if not args.drift_only:
        full = work / "shards" / "full"
        full_manifest = build_once(old_rows + rounds[0], work / "full.csv", full, base, args.size)
    prep_seconds = time.perf_counter() - t0

    # real photos: the real-photo recipe at its own 160 px; synthetic: the quickstart's at --size
    # real photos: one centre crop at test (not experiment=photos' 5 views), as onboard.py and the drift
    # chains' evaluator test, so that every row of a table sees the same pixels
    sized = (
        ["experiment=photos", "data.test_crops=1"]
        if args.data
        else ["experiment=quickstart", f"data.image_size={args.size}"]
    )
    recipe = [*sized, "trainer.enable_progress_bar=false", "~callbacks.progress_bar"]
    recipe_epochs = [*recipe, f"trainer.max_epochs={args.epochs}"]
    base_metrics, base_wall = train_once(args, work / "runs" / "base", *recipe_epochs, f"data.root={base}")
    base_ckpt = base_metrics["best_checkpoint"]
    if args.base_only:
        print(json.dumps({"base": base_metrics, "wall_s": base_wall, "prep_s": prep_seconds}, indent=1, default=str))
        return 0
    if args.drift_only:
        return grocery_drift(args, work, base, base_metrics, base_wall, deltas, old_skus, prep_seconds, recipe)
    results: dict[str, dict] = {
        "base": {
            "top1_old": base_metrics["test/top1"],
            "wall_s": base_wall,
            "train_s": base_metrics.get("train/seconds"),
            "ridge_s": base_metrics.get("ridge/seconds"),
        }
    }
    full_metrics, full_wall = train_py(work / "runs" / "full", *recipe_epochs, f"data.root={full}")
    epochs = int(full_metrics.get("epochs", args.epochs))
    full_images = epochs * (full_manifest["splits"]["train"]["count"] + full_manifest["splits"]["val"]["count"])
    results["full retrain"] = {
        "top1_old": per_sku_top1(work / "runs" / "full", set(old_skus)),
        "top1_new": per_sku_top1(work / "runs" / "full", set(new_skus)),
        "top1_all": full_metrics["test/top1"],
        "wall_s": full_wall,
        "train_s": full_metrics.get("train/seconds"),
        "backbone_images": full_images,
    }
    onboard = [f"onboard.from={base_ckpt}", f"data.root={deltas[0]}", f"onboard.replay_per_sku={args.replay}"]
    variants = {
        "finetune": ["onboard.strategy=finetune"],
        "closed_form (means)": ["onboard.strategy=closed_form", "onboard.solver=mean"],
        "closed_form (ridge)": ["onboard.strategy=closed_form", "onboard.solver=ridge"],
        f"closed_form (ridge, projection {args.projection})": [
            "onboard.strategy=closed_form",
            "onboard.solver=ridge",
            f"onboard.projection={args.projection}",
            "onboard.ridge=null",
        ],
    }
    for name, extra in variants.items():
        run_dir = work / "runs" / slug(name)
        m, wall = onboard_py(run_dir, *onboard, *extra)
        results[name] = {
            "top1_old": m["test/top1_old"],
            "top1_new": m["test/top1_new"],
            "top1_all": m["test/top1"],
            "wall_s": wall,
            "train_s": m["onboard/seconds"],
            "backbone_images": m["onboard/backbone_images"],
        }

    drift = drift_rounds(args, work, base_ckpt, deltas, set(old_skus)) if len(deltas) > 1 else {}
    counts = {
        k: sum(
            int(r["test_images"])
            for r in csv.DictReader((work / "runs" / "full" / "per_sku.csv").open())
            if (r["sku_id"] in new_skus) == (k == "new_test")
        )
        for k in ("old_test", "new_test")
    }
    results["_meta"] = {
        **counts,
        "old_skus": len(old_skus),
        "new_skus": len(new_skus),
        "same_family_new": not args.data,
        "base_train_images": base_manifest["splits"]["train"]["count"],
        "epochs": args.epochs,
        "replay_per_sku": args.replay,
        "size": args.size,
        "recipe": "experiment=photos at 160 px" if args.data else f"quickstart recipe at {args.size} px",
        "prep_s": prep_seconds,
        "data": args.data or "synthetic",
        "machine": machine(),
        "load_average": load_average(),
    }
    table = render(results, drift)
    plot(
        results,
        drift,
        ROOT / "docs" / ("benchmark_onboarding_grocery.png" if args.data else "benchmark_onboarding.png"),
    )
    name = "benchmark_onboarding_grocery" if args.data else "benchmark_onboarding"
    return publish(name, table, {"methods": results, "drift": drift}, args)


# -- chained rounds on real photos ----------------------------------------------------------------
class HeadEvaluator:
    """Test top-1 of onboarded checkpoints from test features computed once.

    Closed-form onboarding never changes the trunk (backbone + hidden head layers), so every round's
    model sees the same test features; only its last layer (and a RanPAC projection, a fixed buffer)
    differs. Each checkpoint's trunk weights and preprocessing are checked against the base's.
    """

    def __init__(self, base_ckpt: str, shard_sets: list[Path], batch_size: int = 64):
        import torch

        from skuvision.data.labels import LabelMap
        from skuvision.data.transforms import eval_transform
        from skuvision.model.ridge import split_model
        from skuvision.onboarding.features import FeatureCache
        from skuvision.onboarding.grow import grown_model, load_checkpoint
        from skuvision.onboarding.replay import read_picks, split_picks

        start = time.perf_counter()
        self.shard_sets = shard_sets
        base = load_checkpoint(base_ckpt)
        self.preprocess = base["preprocess"]
        self.trunk_state = {k: v for k, v in base["state_dict"].items() if _in_trunk(k, base["state_dict"])}
        model, _ = grown_model(base, LabelMap.from_dict(base["label_map"]))
        trunk, _ = split_model(model)
        picks = []
        for root in shard_sets:
            manifest = json.loads((root / "manifest.json").read_text())
            picks += split_picks(str(root), manifest, "test")
        torch.set_grad_enabled(False)
        self.feats, self.labels = FeatureCache(trunk, batch_size=batch_size).extract(
            read_picks(picks), eval_transform(self.preprocess)
        )
        self.seconds = time.perf_counter() - start
        self.sku_order = LabelMap.from_dict(
            json.loads((shard_sets[-1] / "manifest.json").read_text())["label_map"]
        ).skus

    def top1(self, ckpt_path: str, original: int, resolve: float | None = None) -> dict:
        """Top-1 on the original classes' test images, on the later classes the model knows, and overall.
        ``resolve``: the SKU layer re-solved from the checkpoint's own ridge sums with this penalty instead."""
        import torch

        from skuvision.data.labels import LabelMap
        from skuvision.onboarding.grow import load_checkpoint

        start = time.perf_counter()
        ckpt = load_checkpoint(ckpt_path)
        state = ckpt["state_dict"]
        if ckpt.get("preprocess") != self.preprocess:
            raise SystemExit(f"{ckpt_path}: preprocessing {ckpt.get('preprocess')} differs from the base's")
        for key, value in self.trunk_state.items():
            if key in state and not torch.equal(state[key], value):
                raise SystemExit(f"{ckpt_path}: trunk weight {key} differs from the base's")
        index = LabelMap.from_dict(ckpt["label_map"]).sku_to_index
        if any(index.get(sku) != i for i, sku in enumerate(self.sku_order[:original])):
            raise SystemExit(f"{ckpt_path}: the original classes moved in its label map")
        # the test images' labels (the last round's label map) as this checkpoint's class indices; -1: unknown
        remap = torch.tensor([index.get(sku, -1) for sku in self.sku_order])
        last = max(int(k.split(".")[1]) for k in state if k.startswith("head."))
        feats = self.feats
        projection = (ckpt["hyper_parameters"].get("head") or {}).get("projection")
        if projection:  # RanPAC: relu(f W), W a buffer just before the SKU layer
            feats = feats @ state[f"head.{last - 1}.weight"].to(feats.dtype)
            feats = feats.clamp_min(0) if projection.get("nonlinearity", "relu") == "relu" else feats
        weight, bias = state[f"head.{last}.weight"], state[f"head.{last}.bias"]
        if resolve is not None:
            from skuvision.model.ridge import RidgeStats

            weight, bias = RidgeStats.from_state(ckpt["onboarding"]["ridge"]).solve(resolve)
        logits = feats @ weight.T + bias
        n = len(index)
        labels = remap[self.labels]
        seen = labels >= 0
        hit = logits[seen].argmax(1) == labels[seen]
        orig = self.labels[seen] < original
        later = ~orig
        return {
            "top1_original": float(hit[orig].float().mean()),
            "top1_onboarded": float(hit[later].float().mean()) if later.any() else None,
            "top1_all": float(hit.float().mean()),
            "test_images": int(seen.sum()),
            "classes": n,
            "ridge_images": int((ckpt.get("onboarding") or {}).get("ridge", {}).get("count", 0)) or None,
            "eval_s": time.perf_counter() - start,
        }


def _in_trunk(key: str, state: dict) -> bool:
    """Backbone and hidden head layers: everything but the SKU layer and the brand/category heads."""
    last = max(int(k.split(".")[1]) for k in state if k.startswith("head."))
    return not key.startswith(("aux.", f"head.{last}."))


def grocery_drift(args, work: Path, base: Path, base_metrics: dict, base_wall: float, deltas, old_skus, prep_s, recipe):
    """Chained closed-form ridge rounds on real photos, each from the previous round's checkpoint, evaluated
    on cached test features; then the 4-class delta (the first two rounds' classes at once) with each solver,
    and (``--retrain``) the full retrain and warm starts that the chains are measured against."""
    base_ckpt = base_metrics["best_checkpoint"]
    original = len(old_skus)
    evaluator = HeadEvaluator(base_ckpt, [base, *deltas])
    base_eval = evaluator.top1(base_ckpt, original)
    # the same base with its SKU layer re-solved from its own sums (no new class): the ridge head's reference
    base_ridge = evaluator.top1(base_ckpt, original, resolve=1.0)
    quiet = ["onboard.test=false", f"onboard.replay_per_sku={args.replay}"]
    chains = {
        "ridge": ["onboard.solver=ridge"],
        "ridge_val": ["onboard.solver=ridge", "onboard.ridge=null"],
        # RanPAC: the base's sums are of unprojected features, so round 1 replays every base train image
        # (later rounds' checkpoints carry projected sums and read only their new images); penalty on val
        "projection": [
            "onboard.solver=ridge",
            f"onboard.projection={args.projection}",
            "onboard.ridge=null",
            f"onboard.ridge_grid={PROJECTION_GRID}",
            "onboard.replay_per_sku=1000000",
        ],
    }
    series = {}
    for chain, extra in chains.items():
        rounds, ckpt = [], base_ckpt
        keys = {e.split("=", 1)[0] for e in extra}
        mine = [q for q in quiet if q.split("=", 1)[0] not in keys]
        for i, delta in enumerate(deltas, 1):
            run_dir = work / "runs" / f"drift_{chain}_{i:02d}"
            m, wall = onboard_py(run_dir, f"onboard.from={ckpt}", f"data.root={delta}", *extra, *mine)
            ckpt = m["best_checkpoint"]
            row = {"round": i, "wall_s": wall, "onboard_s": m["onboard/seconds"], **evaluator.top1(ckpt, original)}
            row["backbone_images"] = m["onboard/backbone_images"]
            row["ridge_from_base"] = m.get("onboard/ridge_from_base")
            row["ridge_penalty"] = m.get("onboard/ridge_penalty")
            row["ckpt"] = ckpt
            rounds.append(row)
            print(json.dumps({chain: row}), flush=True)
        series[chain] = rounds
    rounds = series["ridge"]
    variants = {}
    if not args.no_variants:
        delta4 = work / "shards" / "delta4"
        rows4 = [r for part in grocery_rows(args)[1][:2] for r in part]
        build_once(rows4, work / "delta4.csv", delta4, base, args.size)
        every = work / "shards" / "all_held_out"
        build_once(
            [r for part in grocery_rows(args)[1] for r in part], work / "all_held_out.csv", every, base, args.size
        )
        joint = {"delta": every, "base": base_ckpt, "name": f"all {meta_held(deltas)} held-out classes in one round"}
        solvers = {
            "closed_form ridge (base sums)": ["onboard.solver=ridge"],
            "closed_form means": ["onboard.solver=mean"],
            f"closed_form ridge + projection {args.projection} (ridge on val)": [
                "onboard.solver=ridge",
                f"onboard.projection={args.projection}",
                "onboard.ridge=null",
                f"onboard.ridge_grid={PROJECTION_GRID}",
            ],
            # the base run's sums are of the unprojected features: replaying every old train image gives the
            # projected sums that a base trained with callbacks.ridge_statistics.projection would have left
            f"closed_form ridge + projection {args.projection} (ridge on val), every base train image replayed": [
                "onboard.solver=ridge",
                f"onboard.projection={args.projection}",
                "onboard.ridge=null",
                f"onboard.ridge_grid={PROJECTION_GRID}",
                "onboard.replay_per_sku=1000000",
            ],
        }
        solvers[joint["name"] + " (= the joint ridge solution)"] = ["onboard.solver=ridge"]
        for name, extra in solvers.items():
            run_dir = work / "runs" / ("v4_" + slug(name))
            delta = every if name.startswith(joint["name"]) else delta4
            keys = {e.split("=", 1)[0] for e in extra}
            mine = [q for q in quiet if q.split("=", 1)[0] not in keys]
            m, wall = onboard_py(run_dir, f"onboard.from={base_ckpt}", f"data.root={delta}", *extra, *mine)
            variants[name] = {
                "wall_s": wall,
                "onboard_s": m["onboard/seconds"],
                "backbone_images": m["onboard/backbone_images"],
                "replay_images": m.get("onboard/replay_images"),
                "ridge_penalty": m.get("onboard/ridge_penalty"),
                **evaluator.top1(m["best_checkpoint"], original),
            }
            print(json.dumps({name: variants[name]}), flush=True)
    retrains = retrain_runs(args, work, recipe, deltas, old_skus, rounds[-1]["ckpt"]) if args.retrain else {}
    policy = (
        retrain_policy(args, work, recipe, base, deltas, old_skus, base_ckpt, evaluator) if args.retrain_every else []
    )
    base_manifest = json.loads((base / "manifest.json").read_text())
    meta = {
        "original": original,
        "held_out": meta_held(deltas),
        "projection": args.projection,
        "retrain_every": args.retrain_every,
        "retrain_every_epochs": args.retrain_every_epochs,
        "base_train_images": base_manifest["splits"]["train"]["count"],
        "epochs": args.epochs,
        "base_wall_s": base_wall,
        "base_train_s": base_metrics.get("train/seconds"),
        "base_ridge_s": base_metrics.get("ridge/seconds"),
        "base_test_top1": base_metrics.get("test/top1"),
        "eval_features_s": evaluator.seconds,
        "test_images": len(evaluator.labels),
        "prep_s": prep_s,
        "machine": machine(),
        "load_average": load_average(),
    }
    results = {
        "meta": meta,
        "base": base_eval,
        "base_ridge": base_ridge,
        "rounds": rounds,
        "rounds_ridge_val": series["ridge_val"],
        "rounds_projection": series["projection"],
        "variants": variants,
        "retrains": retrains,
        "rounds_policy": policy,
    }
    (work / "drift.json").write_text(json.dumps(results, indent=1))
    plot_drift(results, ROOT / "docs" / "benchmark_onboarding_grocery_drift.png")
    return publish("benchmark_onboarding_grocery_drift", render_drift(results), results, args)


PROJECTION_GRID = "[1.0,10.0,100.0,1000.0,10000.0,100000.0]"  # RanPAC's D-dim features want larger penalties


def retrain_policy(args, work: Path, recipe, base: Path, deltas, old_skus, base_ckpt: str, evaluator) -> list[dict]:
    """Ridge rounds with a warm-started retrain (``init_from``, ``--retrain-every-epochs``) on every class so far
    after every ``--retrain-every`` rounds; later rounds onboard from the retrain's tested checkpoint (it carries
    the sums of its whole train split), on deltas rebuilt on top of the retrain's shards. Each round is
    evaluated on the same test images; a retrain moves the trunk, so the test features are recomputed."""
    old_rows, held = grocery_rows(args)
    every, epochs, original = args.retrain_every, args.retrain_every_epochs, len(old_skus)
    tag = f"policy{every}x{epochs}"
    ckpt, known, rebased, out = base_ckpt, base, False, []
    for i, delta in enumerate(deltas, 1):
        if rebased:  # the month's delta on top of the shards the current checkpoint was trained (or onboarded) on
            delta = work / "shards" / f"{tag}_delta{i:02d}"
            build_once(held[i - 1], work / f"{tag}_delta{i:02d}.csv", delta, known, args.size)
        run_dir = work / "runs" / f"drift_{tag}_{i:02d}"
        m, wall = onboard_py(
            run_dir,
            f"onboard.from={ckpt}",
            f"data.root={delta}",
            "onboard.solver=ridge",
            "onboard.test=false",
            f"onboard.replay_per_sku={args.replay}",
        )
        ckpt, known = m["best_checkpoint"], delta
        row = {
            "round": i,
            "step": "ridge",
            "wall_s": wall,
            "onboard_s": m["onboard/seconds"],
            "ridge_from_base": m.get("onboard/ridge_from_base"),
            **evaluator.top1(ckpt, original),
        }
        out.append(row)
        print(json.dumps({tag: row}), flush=True)
        if i % every or i == len(deltas):
            continue
        so_far = work / "shards" / f"{tag}_all{i:02d}"
        build_once(
            old_rows + [r for part in held[:i] for r in part], work / f"{tag}_all{i:02d}.csv", so_far, known, args.size
        )
        run_dir = work / "runs" / f"drift_{tag}_{i:02d}_retrain"
        m, wall = train_once(
            args, run_dir, *recipe, f"trainer.max_epochs={epochs}", f"data.root={so_far}", f"init_from={ckpt}"
        )
        ckpt, known, rebased = m["best_checkpoint"], so_far, True
        evaluator = HeadEvaluator(ckpt, evaluator.shard_sets)
        row = {
            "round": i,
            "step": f"warm retrain, {epochs} epochs",
            "wall_s": wall,
            "onboard_s": m["train/seconds"],
            "ridge_s": m.get("ridge/seconds"),
            "features_s": evaluator.seconds,
            **evaluator.top1(ckpt, original),
        }
        out.append(row)
        print(json.dumps({tag: row}), flush=True)
    return out


def retrain_runs(args, work: Path, recipe: list[str], deltas: list[Path], old_skus: list[str], last: str) -> dict:
    """The full retrain on every class from ImageNet and warm starts from ``last`` (the chain's final
    checkpoint), on shards of all classes built with the chain's label map; top-1 on the original and the
    held-out classes' test images from each run's per_sku.csv (train.py's test, one centre crop)."""
    old_rows, held_rows = grocery_rows(args)
    held_rows = [r for part in held_rows for r in part]
    full = work / "shards" / "full"
    manifest = build_once(old_rows + held_rows, work / "full.csv", full, deltas[-1], args.size)
    held = {r["sku_id"] for r in held_rows}
    runs = {"full retrain from ImageNet": (args.epochs, [])}
    for epochs in (int(e) for e in args.warm_epochs.split(",") if e.strip()):
        runs[f"warm start from round {len(deltas)}, {epochs} epochs"] = (epochs, [f"init_from={last}"])
    out = {}
    for name, (epochs, extra) in runs.items():
        run_dir = work / "runs" / ("retrain_" + slug(name))
        m, wall = train_once(args, run_dir, *recipe, f"trainer.max_epochs={epochs}", f"data.root={full}", *extra)
        out[name] = {
            "epochs": epochs,
            "top1_original": per_sku_top1(run_dir, set(old_skus)),
            "top1_onboarded": per_sku_top1(run_dir, held),
            "top1_all": m["test/top1"],
            "val_top1": m.get("val/top1"),
            "train_s": m.get("train/seconds"),
            "wall_s": wall,
            "backbone_images": epochs * (manifest["splits"]["train"]["count"] + manifest["splits"]["val"]["count"]),
        }
        print(json.dumps({name: out[name]}), flush=True)
    return out


def meta_held(deltas) -> int:
    return sum(len(json.loads((d / "manifest.json").read_text())["per_sku"]) for d in deltas)


def render_drift(results: dict) -> str:
    meta, base = results["meta"], results["base"]
    lines = [
        "| round | classes | original top-1 % (Δ vs base) | onboarded so far % | all % | ridge sums: images | "
        "backbone images | onboarding s | command s | eval s | ridge on val: original % | onboarded % | penalty |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| base | {base['classes']} | {_pct(base['top1_original'])} | — | {_pct(base['top1_all'])} | "
        f"{meta['base_train_images']} | — | — | — | {base['eval_s']:.1f} | | | |",
    ]
    if results.get("base_ridge"):
        ref = results["base_ridge"]
        drop = 100 * (ref["top1_original"] - base["top1_original"])
        lines.append(
            f"| base, SKU layer re-solved from its sums (ridge 1.0, no new class) | {ref['classes']} | "
            f"{_pct(ref['top1_original'])} ({drop:+.1f}) | — | {_pct(ref['top1_all'])} | {ref['ridge_images']} | 0 "
            f"| — | — | {ref['eval_s']:.1f} | | | |"
        )
    for r, v in zip(results["rounds"], results.get("rounds_ridge_val") or [{}] * len(results["rounds"])):
        drop = 100 * (r["top1_original"] - base["top1_original"])
        lines.append(
            f"| {r['round']} | {r['classes']} | {_pct(r['top1_original'])} ({drop:+.1f}) | "
            f"{_pct(r['top1_onboarded'])} | {_pct(r['top1_all'])} | {r['ridge_images']} | {r['backbone_images']} | "
            f"{r['onboard_s']:.1f} | {r['wall_s']:.1f} | {r['eval_s']:.1f} | {_pct(v.get('top1_original'))} | "
            f"{_pct(v.get('top1_onboarded'))} | {v.get('ridge_penalty', '—')} |"
        )
    if results.get("rounds_projection"):
        lines += [
            "",
            f"| round, ridge + projection {meta.get('projection', '')} (penalty on val) | original top-1 % (Δ vs base) "
            "| onboarded so far % | all % | ridge sums: images | backbone images | onboarding s | command s | penalty |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["rounds_projection"]:
            drop = 100 * (r["top1_original"] - base["top1_original"])
            lines.append(
                f"| {r['round']} | {_pct(r['top1_original'])} ({drop:+.1f}) | {_pct(r['top1_onboarded'])} | "
                f"{_pct(r['top1_all'])} | {r['ridge_images']} | {r['backbone_images']} | {r['onboard_s']:.1f} | "
                f"{r['wall_s']:.1f} | {r['ridge_penalty']} |"
            )
    if results.get("rounds_policy"):
        policy = results["rounds_policy"]
        full = next(iter((results.get("retrains") or {}).values()), None)
        spent = sum(r["onboard_s"] for r in policy)
        lines += [
            "",
            f"| round, ridge + a warm retrain ({meta['retrain_every_epochs']} epochs) after every "
            f"{meta['retrain_every']} rounds | step | classes | original top-1 % (Δ vs base) | onboarded so far % "
            "| all % | onboarding / fit s | command s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in policy:
            drop = 100 * (r["top1_original"] - base["top1_original"])
            lines.append(
                f"| {r['round']} | {r['step']} | {r['classes']} | {_pct(r['top1_original'])} ({drop:+.1f}) | "
                f"{_pct(r['top1_onboarded'])} | {_pct(r['top1_all'])} | {r['onboard_s']:.1f} | {r['wall_s']:.1f} |"
            )
        ratio = f" = {spent / full['train_s']:.3f}× the full retrain's fit" if full else ""
        lines.append(
            f"\nThe policy's onboarding and retrain seconds over all {policy[-1]['round']} rounds: {spent:.0f} s{ratio}."
        )
    if results.get("retrains"):
        full = next(iter(results["retrains"].values()))
        last = results["rounds"][-1]
        lines += [
            "",
            f"| all {last['classes']} classes | epochs | original top-1 % (Δ vs base) | held-out classes % | all % | "
            "best val top-1 % | fit s | × retrain fit | whole command s |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| round {last['round']} of the ridge chain (frozen trunk) | — | {_pct(last['top1_original'])} "
            f"({100 * (last['top1_original'] - base['top1_original']):+.1f}) | {_pct(last['top1_onboarded'])} | "
            f"{_pct(last['top1_all'])} | — | {last['onboard_s']:.1f} (onboarding, last round) | "
            f"{last['onboard_s'] / full['train_s']:.3f} | {last['wall_s']:.1f} |",
        ]
        for name, r in results["retrains"].items():
            drop = 100 * (r["top1_original"] - base["top1_original"])
            lines.append(
                f"| {name} | {r['epochs']} | {_pct(r['top1_original'])} ({drop:+.1f}) | {_pct(r['top1_onboarded'])} "
                f"| {_pct(r['top1_all'])} | {_pct(r['val_top1'])} | {r['train_s']:.0f} | "
                f"{r['train_s'] / full['train_s']:.3f} | {r['wall_s']:.0f} |"
            )
    if results["variants"]:
        lines += [
            "",
            "| 4-class delta, same base | old top-1 % (Δ vs base) | new top-1 % | all % | backbone images | "
            "onboarding s | command s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, v in results["variants"].items():
            drop = 100 * (v["top1_original"] - base["top1_original"])
            lines.append(
                f"| {name} | {_pct(v['top1_original'])} ({drop:+.1f}) | {_pct(v['top1_onboarded'])} | "
                f"{_pct(v['top1_all'])} | {v['backbone_images']} | {v['onboard_s']:.1f} | {v['wall_s']:.1f} |"
            )
    return "\n".join(lines)


def plot_drift(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base, rounds = results["base"], results["rounds"]
    fig, ax = plt.subplots(1, 1, figsize=(8, 5.5), constrained_layout=True)
    xs = [0] + [r["round"] for r in rounds]
    ax.plot(
        xs,
        [100 * base["top1_original"]] + [100 * r["top1_original"] for r in rounds],
        marker="o",
        label=f"original {results['meta']['original']} classes",
    )
    ax.plot(
        [r["round"] for r in rounds],
        [100 * (r["top1_onboarded"] or 0) for r in rounds],
        marker="s",
        alpha=0.7,
        label="classes onboarded so far",
    )
    ax.axhline(100 * base["top1_original"], color="k", ls=":", lw=1, label="base model (its SGD head)")
    if results.get("base_ridge"):
        ax.axhline(
            100 * results["base_ridge"]["top1_original"],
            color="tab:green",
            ls="--",
            lw=1,
            label="base, SKU layer re-solved from its sums",
        )
    ax.axhspan(
        100 * base["top1_original"] - 1,
        100 * base["top1_original"],
        color="0.85",
        alpha=0.5,
        label="goal: within 1 point",
    )
    meta = results["meta"]
    # the policy's rounds 3, 6, 9 appear twice (ridge, then its retrain): plot the retrained model
    policy = list({r["round"]: r for r in results.get("rounds_policy") or []}.values())
    chains = [
        (results.get("rounds_ridge_val"), ".", "--", "tab:purple", "original, onboard.ridge=null (penalty on val)"),
        (
            results.get("rounds_projection"),
            "^",
            "-.",
            "tab:red",
            f"original, ridge + projection {meta.get('projection', '')} (penalty on val)",
        ),
        (
            policy,
            "D",
            "-",
            "tab:brown",
            f"original, ridge + a {meta.get('retrain_every_epochs')}-epoch warm retrain every "
            f"{meta.get('retrain_every')} rounds",
        ),
    ]
    for series, marker, ls, color, label in chains:
        if series:
            ax.plot(
                xs,
                [100 * base["top1_original"]] + [100 * r["top1_original"] for r in series],
                marker=marker,
                ls=ls,
                color=color,
                alpha=0.8,
                label=label,
            )
    if results.get("retrains"):
        name, full = next(iter(results["retrains"].items()))
        ax.axhline(
            100 * full["top1_original"],
            color="tab:olive",
            ls="-",
            lw=1.5,
            label=f"original, {name} on all {rounds[-1]['classes']} classes",
        )
    for r in rounds:
        ax.annotate(
            f"{100 * r['top1_original']:.1f}",
            (r["round"], 100 * r["top1_original"]),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            fontsize=7,
        )
    ax.set(
        title=f"chained ridge rounds, GroceryStoreDataset ({results['meta']['epochs']}-epoch base)",
        xlabel="round (0 = base)",
        ylabel="test top-1 %",
    )
    ax.legend(fontsize=7, loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def drift_rounds(args, work: Path, base_ckpt: str, deltas: list[Path], original: set[str]) -> dict:
    """Chained closed-form rounds (means and ridge): the original SKUs' test top-1 after each."""
    out = {}
    for solver in ("mean", "ridge"):
        ckpt, series = base_ckpt, []
        for i, delta in enumerate(deltas, 1):
            run_dir = work / "runs" / f"drift_{solver}_{i:02d}"
            m, wall = onboard_py(
                run_dir,
                f"onboard.from={ckpt}",
                f"data.root={delta}",
                f"onboard.replay_per_sku={args.replay}",
                f"onboard.solver={solver}",
            )
            series.append(
                {
                    "round": i,
                    "top1_original": per_sku_top1(run_dir, original),
                    "top1_old": m["test/top1_old"],
                    "top1_new": m["test/top1_new"],
                    "num_classes": m["num_classes"],
                    "wall_s": wall,
                    "backbone_images": m["onboard/backbone_images"],
                }
            )
            ckpt = m["best_checkpoint"]
        out[solver] = series
    return out


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def render(results: dict, drift: dict) -> str:
    meta, base, full = results["_meta"], results["base"], results["full retrain"]
    png = "benchmark_onboarding.png" if meta["data"] == "synthetic" else "benchmark_onboarding_grocery.png"
    title = (
        "## Monthly onboarding vs full retrain (`scripts/benchmark_onboarding.py`)"
        if meta["data"] == "synthetic"
        else "## Monthly onboarding on real photos vs a full retrain (`scripts/benchmark_onboarding.py --data`)"
    )
    load = meta.get("load_average")
    where = f"load average (1, 5, 15 min) at the end {load}" if load else "on 2 CPU cores"
    lines = [
        title,
        "",
        f"{meta['data']}: base model on {meta['old_skus']} SKUs ({meta['base_train_images']} train images, "
        f"{meta['epochs']} epochs, {meta['recipe']}), then +{meta['new_skus']} new SKUs"
        + (" from the same brand families" if meta["same_family_new"] else "")
        + f"; replay {meta['replay_per_sku']} "
        f"images per old SKU. {meta['machine']}; all rows measured in the same run; {where}.",
        "",
        f"Base model: old-SKU test top-1 {_pct(base['top1_old'])} %"
        + (
            f"; its pass over the train split for the ridge sums (`ridge/seconds`) took {base['ridge_s']:.0f} s."
            if base.get("ridge_s")
            else "."
        ),
        "",
        "| method | old top-1 % (Δ vs base) | new top-1 % | all top-1 % | wall s | × full | train-side s | × full | backbone images | × full |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if name in ("_meta", "base"):
            continue
        drop = 100 * (r["top1_old"] - base["top1_old"])
        ts = r.get("train_s")
        lines.append(
            f"| {name} | {_pct(r['top1_old'])} ({drop:+.1f}) | {_pct(r['top1_new'])} | {_pct(r['top1_all'])} | "
            f"{r['wall_s']:.0f} | {r['wall_s'] / full['wall_s']:.3f} | {ts or 0:.1f} | "
            f"{(ts or 0) / (full.get('train_s') or float('nan')):.3f} | {r['backbone_images']} | "
            f"{r['backbone_images'] / full['backbone_images']:.3f} |"
        )
    note = (
        " The retrain ran the base model's epochs on more SKUs and ends below the base on old SKUs: it had "
        "not converged as far, while the onboarded rows sit on the base model's features."
        if full["top1_old"] < base["top1_old"]
        else ""
    )
    lines += [
        "",
        f"Test images: {meta.get('old_test', '?')} of old SKUs, {meta.get('new_test', '?')} of new ones (one "
        f"new-SKU image is worth several points).{note} ![onboarding](docs/{png})",
    ]
    lines += [
        "",
        "wall s: the whole `python train.py ...` / `python onboard.py ...` command (start-up, data, training, testing on every test "
        "image); train-side s: the retrain's `train/seconds` (fit only) vs onboarding's `onboard/seconds` "
        "(load, features, solve/fit; no testing); backbone images: images (or augmented copies) pushed through "
        "the backbone for training (the retrain: epochs × (train + val)).",
    ]
    if drift:
        lines += [
            "",
            "Drift: successive closed-form rounds, each adding as many SKUs again; test top-1 of the "
            f"{meta['old_skus']} original SKUs after each round (base: {_pct(base['top1_old'])} %).",
            "",
            "| round | SKUs | means: original % | means: new % | ridge: original % | ridge: new % | ridge backbone images |",
            "|---|---|---|---|---|---|---|",
        ]
        for a, b in zip(drift["mean"], drift["ridge"]):
            lines.append(
                f"| {a['round']} | {a['num_classes']} | {_pct(a['top1_original'])} | {_pct(a['top1_new'])} | "
                f"{_pct(b['top1_original'])} | {_pct(b['top1_new'])} | {b['backbone_images']} |"
            )
    return "\n".join(lines)


def plot(results: dict, drift: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in results if n not in ("_meta", "base")]
    fig, axes = plt.subplots(1, 3 if drift else 2, figsize=(15 if drift else 10, 4))
    x = range(len(names))
    for k, key in enumerate(("top1_old", "top1_new", "top1_all")):
        axes[0].bar([i + 0.27 * (k - 1) for i in x], [100 * (results[n][key] or 0) for n in names], 0.27, label=key)
    axes[0].axhline(100 * results["base"]["top1_old"], color="k", ls=":", lw=1, label="base old")
    axes[0].set_xticks(list(x), names, rotation=15, fontsize=8)
    axes[0].set_ylabel("test top-1 %")
    axes[0].legend(fontsize=7)
    full = results["full retrain"]
    axes[1].bar(x, [results[n]["wall_s"] / full["wall_s"] for n in names])
    axes[1].set_yscale("log")
    axes[1].set_xticks(list(x), names, rotation=15, fontsize=8)
    axes[1].set_ylabel("wall time / full retrain")
    if drift:
        for solver, series in drift.items():
            axes[2].plot(
                [s["round"] for s in series], [100 * s["top1_original"] for s in series], marker="o", label=solver
            )
        axes[2].axhline(100 * results["base"]["top1_old"], color="k", ls=":", lw=1, label="base")
        axes[2].set_xlabel("round")
        axes[2].set_ylabel("original SKUs' top-1 %")
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
