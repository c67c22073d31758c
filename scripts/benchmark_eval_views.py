#!/usr/bin/env python
"""Eval-time views of a trained checkpoint, chosen on the validation split (issue 22).

Test-time settings are part of a recipe, and like every other setting they are picked on **val**,
never by looking at test: this scores one checkpoint on one split (default ``val``) under several
views and reports each against the first one, paired image by image (gained / lost), because on a
few hundred val images a point or two is a handful of photos.

A view is ``SIZE:CROP_PCT:CROPS``: resize the shorter side to ``SIZE / CROP_PCT`` with the
checkpoint's interpolation, then average the softmax of ``CROPS`` crops of ``SIZE`` px: 1 = the
centre (what training's test and ``skuvision evaluate`` do), 3 = centre and both ends of the long
side, 5 = centre and the four corners. Never a mirror: packaging text is not symmetric.

    python scripts/benchmark_eval_views.py RUN/checkpoints/best.ckpt SHARDS \
        --views 160:0.875:1,160:0.875:5,192:0.875:1
"""

# ruff: noqa: I001  (skuvision must load before torch: it sets OMP_WAIT_POLICY=PASSIVE)
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import skuvision  # noqa: E402,F401
import numpy as np  # noqa: E402
import torch  # noqa: E402
from benchmark_common import machine, publish  # noqa: E402

from skuvision.data.preprocess import with_crop_pct  # noqa: E402
from skuvision.data.transforms import eval_transform  # noqa: E402
from skuvision.export.evaluate import view_logits  # noqa: E402
from skuvision.export.runtime import TorchPredictor  # noqa: E402
from skuvision.export.shard_reader import iter_split  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring for views.")
    p.add_argument("checkpoint", help="a .ckpt of a finished run (its preprocessing is the baseline)")
    p.add_argument("shards", help="the shard dir the run trained on")
    p.add_argument("--split", default="val", help="split to score (default val: choose on val, report test once)")
    p.add_argument("--views", default="160:0.875:1,160:0.875:3,160:0.875:5,192:0.875:1,160:1.0:1")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-markdown", action="store_true")
    return p.parse_args(argv)


def score_view(predictor, images, view: str, batch: int) -> tuple[np.ndarray, float]:
    """Predicted class per image under ``view`` and the seconds it took: the transform and the averaging of
    a training run's test with ``data.test_crops`` (``eval_transform``, ``evaluate.view_logits``)."""
    size, crop_pct, crops = view.split(":")
    transform = eval_transform(with_crop_pct({**predictor.spec, "crop": int(size)}, float(crop_pct)), int(crops))
    started, predictions = time.perf_counter(), []
    for i in range(0, len(images), batch):
        stacked = torch.stack([transform(image) for image in images[i : i + batch]])
        predictions.append(view_logits(predictor, stacked).argmax(1))
    return np.concatenate(predictions), time.perf_counter() - started


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    predictor = TorchPredictor(Path(args.checkpoint))
    images, labels = zip(*iter_split(args.shards, args.split))
    labels = np.asarray(labels)
    rows, results, base = [], {"machine": machine(), "split": args.split, "images": len(labels), "views": {}}, None
    for view in args.views.split(","):
        pred, seconds = score_view(predictor, images, view, args.batch)
        right = pred == labels
        base = right if base is None else base
        gained, lost = int((right & ~base).sum()), int((~right & base).sum())
        top1 = float(right.mean())
        results["views"][view] = {"top1": top1, "gained": gained, "lost": lost, "seconds": seconds}
        rows.append(f"| {view} | {top1:.4f} | +{gained} / −{lost} | {seconds:.0f} |")
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            f"`python scripts/benchmark_eval_views.py {args.checkpoint} {args.shards} --split {args.split} "
            f"--views {args.views}` on {machine()}; {len(labels)} {args.split} images; gained/lost: images "
            "right/wrong that the first view had wrong/right.",
            "",
            f"| view SIZE:CROP_PCT:CROPS | {args.split} top-1 | vs first view | seconds |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    return publish("eval_views", table, results, args)


if __name__ == "__main__":
    raise SystemExit(main())
