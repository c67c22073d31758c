"""``skuvision export``, ``predict`` and ``evaluate``: from a checkpoint to the checkout counter."""

from __future__ import annotations

import argparse
import sys

from skuvision.export.bundle import export_checkpoint
from skuvision.export.evaluate import evaluate as evaluate_model
from skuvision.export.predict import run_predict


def export(args: argparse.Namespace) -> int:
    summary = export_checkpoint(
        args.ckpt,
        args.out,
        opset=args.opset,
        exporter=args.exporter,
        int8=args.int8,
        calibration=args.calibration,
        image_size=args.image_size,
        calibration_images=args.calibration_images,
        force=args.force,
        int8_activations=args.int8_activations,
    )
    print(
        f"parity: ONNX Runtime fp32 vs PyTorch max |logit diff| {summary['parity_max_abs_diff']:.2e} "
        f"on {summary['parity_images']} images ({summary['exporter']} exporter, opset {summary['opset']})"
    )
    if "int8" in summary:
        q = summary["int8"]
        print(
            f"int8: top-1 agreement with fp32 {q['top1_agreement']:.4f} on {q['agreement_images']} "
            f"{q['agreement_split']} images ({q['calibration_images']} calibration images)"
        )
    files = [
        "model.onnx",
        *(["model.int8.onnx"] if args.int8 else []),
        "labels.json",
        "preprocess.json",
        "model_card.md",
    ]
    print(f"{args.out}: {', '.join(files)} written")
    return 0


def predict(args: argparse.Namespace) -> int:
    ok, failed = run_predict(
        args.model,
        args.inputs,
        topk=args.topk,
        fmt=args.format,
        out=args.out,
        batch_size=args.batch_size,
        image_size=args.image_size,
        int8=args.int8,
        progress=not args.quiet,
    )
    where = args.out or "stdout"
    print(
        f"predicted {ok} of {ok + failed} images ({failed} failed: see the error column) -> {where}",
        file=sys.stderr if not args.out else sys.stdout,
    )
    return 1 if failed else 0


def evaluate(args: argparse.Namespace) -> int:
    metrics, out = evaluate_model(
        args.model,
        args.shards,
        split=args.split,
        out=args.out,
        batch_size=args.batch_size,
        image_size=args.image_size,
        int8=args.int8,
        progress=not args.quiet,
        crops=args.crops,
        crop_pct=args.crop_pct,
    )
    s = args.split
    views = f", {args.crops} crops each" if args.crops > 1 else ""
    views += f" at crop_pct {args.crop_pct}" if args.crop_pct is not None else ""
    print(
        f"{s}/top1 {metrics[f'{s}/top1']:.4f}  {s}/top5 {metrics[f'{s}/top5']:.4f}  on {metrics['images']} images{views} "
        f"({metrics['backend']}); {metrics['skipped_unknown_sku']} images of SKUs unknown to the model skipped"
    )
    for line in metrics["most_confused"]:
        print(f"  confused: {line}")
    print(f"{out}: metrics.json, per_sku.csv, confusions.csv, confusions.png written")
    return 0
