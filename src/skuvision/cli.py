"""``skuvision`` command line: synthetic data, shards, model summary, sweep comparison, export/predict/evaluate."""

from __future__ import annotations

import argparse
import json
import sys

import skuvision  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from skuvision.errors import exit_on_user_error


def _cmd_synth(args: argparse.Namespace) -> int:
    from skuvision.data.synthetic import write_catalogue

    csv_path = write_catalogue(
        args.out,
        args.skus,
        args.images_per_sku,
        size=args.size,
        seed=args.seed,
        workers=args.workers,
        quality=args.quality,
        views=args.views,
    )
    print(f"wrote {args.skus * args.images_per_sku} images and {csv_path}")
    return 0


def _cmd_shards_build(args: argparse.Namespace) -> int:
    from skuvision.data.shards import BuildSettings, build_shards

    settings = BuildSettings(
        size=args.size,
        quality=args.quality,
        val=args.val,
        test=args.test,
        dedup_distance=args.dedup_distance,
        workers=args.workers,
    )
    manifest = build_shards(args.input, args.out, settings, label_map_path=args.label_map, progress=not args.quiet)
    counts = ", ".join(f"{s} {i['count']}" for s, i in manifest["splits"].items())
    print(
        f"{args.out}: {manifest['num_classes']} SKUs; {counts}; {manifest['rejects']} rejected "
        f"(see rejects.csv); manifest.json written"
    )
    fr, show = manifest["split_fractions"], lambda f: " / ".join(f"{s} {v:.3f}" for s, v in f.items())
    given = sum(fr["given"].values())
    if fr["images_split"]:
        print(
            f"split fractions: requested {show(fr['requested'])}; achieved {show(fr['achieved'])} "
            f"(of the {fr['images_split']} images the build split)"
        )
    if given:
        print(f"split given in the CSV for {given} images; all images: {show(fr['achieved_all'])}")
    return 0


def _cmd_shards_verify(args: argparse.Namespace) -> int:
    from skuvision.data.shards import verify_shards

    problems = verify_shards(args.dir, progress=not args.quiet)
    for problem in problems:
        print(f"MISMATCH {problem}", file=sys.stderr)
    if problems:
        print(f"{args.dir}: {len(problems)} problem(s); rebuild with `skuvision shards build`", file=sys.stderr)
        return 1
    from skuvision.data.manifest import read_manifest
    from skuvision.data.remote import is_s3

    hashed = not is_s3(args.dir) and bool(read_manifest(args.dir).get("chunk_sha256"))
    print(
        f"{args.dir}: {'every chunk matches its sha256, ' if hashed else ''}every sample decodes and counts match the manifest"
    )
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from skuvision.summary import model_summary, render_summary

    table = model_summary(args.overrides)
    if args.json:
        print(json.dumps(table))
    else:
        render_summary(table)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from skuvision.errors import UserError
    from skuvision.report.compare import compare

    if bool(args.wandb) == bool(args.dirs):
        raise UserError("compare: pass run/multirun DIRs, or --wandb ENTITY/PROJECT --group G (not both)")
    if args.wandb and not args.group:
        raise UserError("compare --wandb needs --group G: the sweep's W&B group, logged by train.py as `group=...`")
    compare(args.dirs, out=args.out, wandb_path=args.wandb, group=args.group, plot=not args.no_plot)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from skuvision.export.bundle import export_checkpoint

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


def _cmd_predict(args: argparse.Namespace) -> int:
    from skuvision.export.predict import run_predict

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


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from skuvision.export.evaluate import evaluate

    metrics, out = evaluate(
        args.model,
        args.shards,
        split=args.split,
        out=args.out,
        batch_size=args.batch_size,
        image_size=args.image_size,
        int8=args.int8,
        progress=not args.quiet,
    )
    s = args.split
    print(
        f"{s}/top1 {metrics[f'{s}/top1']:.4f}  {s}/top5 {metrics[f'{s}/top5']:.4f}  on {metrics['images']} images "
        f"({metrics['backend']}); {metrics['skipped_unknown_sku']} images of SKUs unknown to the model skipped"
    )
    for line in metrics["most_confused"]:
        print(f"  confused: {line}")
    print(f"{out}: metrics.json, per_sku.csv, confusions.csv, confusions.png written")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _add_deploy_parsers(sub) -> None:
    """``export``, ``predict``, ``evaluate``: from a checkpoint to the checkout counter (skuvision.export)."""
    fmt = argparse.RawDescriptionHelpFormatter
    e = sub.add_parser(
        "export",
        help="checkpoint -> ONNX export dir (model.onnx, labels.json, preprocess.json, model card)",
        description="Export a checkpoint for a checkout counter: model.onnx (fp32, dynamic batch; input "
        "'images' float32 NCHW, normalised RGB; outputs 'logits' and 'probabilities'), "
        "labels.json (class index -> SKU id, brand, category), preprocess.json (resize, crop, "
        "interpolation, mean/std: the eval transform's spec) and model_card.md. Checks ONNX "
        "Runtime against PyTorch before it returns. --int8 adds model.int8.onnx (static QDQ, "
        "per-channel, calibrated on shard images) and measures its top-1 agreement with fp32.",
        epilog="examples:\n"
        "  skuvision export logs/train/runs/<time>/checkpoints/last.ckpt --out export/\n"
        "  skuvision export RUN/checkpoints/best.ckpt --out export/ --int8 --calibration data/shards",
        formatter_class=fmt,
    )
    e.add_argument("ckpt", metavar="CKPT", help="a training checkpoint (.ckpt)")
    e.add_argument("--out", required=True, metavar="DIR", help="export directory")
    e.add_argument(
        "--opset", type=_positive_int, default=17, help="ONNX opset (default 17; the dynamo exporter uses >= 18)"
    )
    e.add_argument(
        "--exporter",
        choices=["auto", "legacy", "dynamo"],
        default="auto",
        help="torch.onnx exporter (default auto: the TorchScript one where it exists, as on torch 2.4)",
    )
    e.add_argument("--int8", action="store_true", help="also write model.int8.onnx (needs --calibration)")
    e.add_argument(
        "--calibration",
        metavar="SHARDS_DIR",
        default=None,
        help="shard dir: INT8 calibration (train split) and agreement (test split) images",
    )
    e.add_argument(
        "--calibration-images", type=_positive_int, default=256, help="images used to calibrate INT8 (default 256)"
    )
    e.add_argument(
        "--int8-activations",
        choices=["uint8", "int8"],
        default="uint8",
        help="uint8 (default): fastest on x86 CPUs with VNNI; int8: for counters without VNNI, where "
        "uint8 activations can saturate",
    )
    e.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        help="the run's data.image_size; only needed when the checkpoint is not inside its run dir",
    )
    e.add_argument("--force", action="store_true", help="overwrite an existing export in --out")
    e.set_defaults(fn=_cmd_export)

    p = sub.add_parser(
        "predict",
        help="top-k SKUs for image files, directories or a CSV",
        description="Predict the top-k SKUs of images with an export dir (ONNX Runtime) or a checkpoint "
        "(PyTorch): same preprocessing, same answers. One row per image: path, then for k = "
        "1..topk sku_k, brand_k, prob_k, and error (why an image could not be read). Exit "
        "status 0 when every image was predicted, 1 when some were not, 2 on bad arguments.",
        epilog="examples:\n"
        "  skuvision predict export/ photos/ --out predictions.csv\n"
        "  skuvision predict RUN/checkpoints/last.ckpt a.jpg b.png --format json\n"
        "  skuvision predict export/ listing.csv --topk 3   # a CSV with a path column",
        formatter_class=fmt,
    )
    p.add_argument("model", metavar="MODEL", help="export dir (written by `skuvision export`) or a .ckpt")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, directories (recursive) or .csv files with a path column (relative to the CSV)",
    )
    p.add_argument("--topk", type=_positive_int, default=5, help="SKUs per image (default 5)")
    p.add_argument("--format", choices=["csv", "json"], default="csv", help="output format (default csv)")
    p.add_argument("--out", metavar="FILE", default=None, help="output file (default: stdout)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--int8", action="store_true", help="use the export dir's model.int8.onnx")
    p.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        help="a checkpoint outside its run dir: the run's data.image_size",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=_cmd_predict)

    v = sub.add_parser(
        "evaluate",
        help="a model on a shard split -> metrics.json, per_sku.csv, confusions.{csv,png}",
        description="Evaluate an export dir or a checkpoint on a split of a shard dir (SKUs matched by id). "
        "Writes metrics.json (top-1/top-5, per-brand and per-category accuracy), per_sku.csv "
        "(worst first), confusions.csv (most frequent true -> predicted SKU pairs with counts, "
        "brands and a same-brand flag) and confusions.png (the worst SKUs' confusion matrix).",
        epilog="example:\n  skuvision evaluate export/ data/shards --split test --out reports/eval",
        formatter_class=fmt,
    )
    v.add_argument("model", metavar="MODEL", help="export dir or a .ckpt")
    v.add_argument("shards", metavar="SHARDS_DIR", help="shard dir (with manifest.json)")
    v.add_argument("--split", default="test", help="split to evaluate (default test)")
    v.add_argument("--out", metavar="DIR", default=None, help="output dir (default logs/evaluate/<time>)")
    v.add_argument("--batch-size", type=_positive_int, default=64, help="images per forward pass (default 64)")
    v.add_argument("--int8", action="store_true", help="use the export dir's model.int8.onnx")
    v.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        help="a checkpoint outside its run dir: the run's data.image_size",
    )
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(fn=_cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skuvision", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "synth",
        help="render a synthetic catalogue of packaged products",
        description="Render DIR/<sku_id>/<n>.jpg and DIR/catalogue.csv: SKUs in brand families, "
        "each image a new camera view. Deterministic per --seed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--skus", type=int, required=True, help="number of SKUs")
    p.add_argument("--images-per-sku", type=int, required=True, help="images per SKU")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="catalogue seed; different seeds give disjoint SKUs and brands")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.add_argument(
        "--views",
        choices=("shelf", "studio"),
        default="shelf",
        help="shelf: in-store camera views (pose, light, clutter vary); studio: one rig shot per SKU on "
        "a plain backdrop, views differing by ~1-2 %% (all images of a SKU look alike)",
    )
    p.set_defaults(fn=_cmd_synth)

    shards = sub.add_parser("shards", help="build or verify litdata shards").add_subparsers(
        dest="shards_cmd", required=True
    )
    b = shards.add_parser(
        "build",
        help="images -> litdata shards + manifest.json",
        description="Check, downscale and re-encode every image, split train/val/test per SKU at "
        "the requested fractions in content-hash order (stable when images are added "
        "with --label-map; near-duplicates kept together), "
        "and write litdata chunks per split, manifest.json and rejects.csv.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    b.add_argument(
        "--input",
        required=True,
        help="ImageFolder DIR/<sku_id>/*.jpg, or a CSV with path,sku_id[,brand,category,split]; "
        "split (train|val|test) is honoured, an empty one is decided by the build",
    )
    b.add_argument(
        "--out",
        required=True,
        help="output shard directory, or s3://BUCKET/PREFIX (chunks upload as they are written; endpoint "
        "and credentials from the usual AWS settings)",
    )
    b.add_argument("--size", type=int, default=320, help="shorter side after resizing (never upscales)")
    b.add_argument("--quality", type=int, default=90, help="JPEG quality of the re-encoded images")
    b.add_argument("--val", type=float, default=0.1, help="validation fraction")
    b.add_argument("--test", type=float, default=0.1, help="test fraction")
    b.add_argument(
        "--label-map",
        default=None,
        help="previous label_map.json or manifest.json (local or s3://): existing SKUs keep their index, "
        "new ones are appended",
    )
    b.add_argument(
        "--dedup-distance",
        type=int,
        default=8,
        help="two images of a SKU whose perceptual hashes differ by at most this many bits (of 64) are "
        "near-duplicates and share a split (-1 disables)",
    )
    b.add_argument(
        "--workers", type=int, default=max(1, (__import__("os").cpu_count() or 1)), help="parallel processes"
    )
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(fn=_cmd_shards_build)
    v = shards.add_parser("verify", help="read every sample and check counts against the manifest")
    v.add_argument("dir", help="shard directory")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(fn=_cmd_shards_verify)

    s = sub.add_parser(
        "summary",
        help="parameter table (total/trainable/per stage) for a config, no data needed",
        description="e.g. skuvision summary experiment=resnet152_fmcg model.num_classes=12000",
    )
    s.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    s.add_argument("--json", action="store_true", help="print one JSON object (keys total, trainable, stages, ...)")
    s.set_defaults(fn=_cmd_summary)

    c = sub.add_parser(
        "compare",
        help="table + plot of a sweep's runs (accuracy vs training cost)",
        description="Compare the jobs of a sweep: the overrides that differ, val/test top-1/top-5, "
        "trainable parameters, training time and images/s. Prints a table and writes "
        "compare.md, compare.csv and compare.png (accuracy and seconds/epoch against the "
        "varying key, one labelled point per job).",
        epilog="examples:\n"
        "  skuvision compare logs/finetune_synthetic/multiruns/2026-11-27_10-00-00\n"
        "  skuvision compare logs/train/runs/A logs/train/runs/B --out reports/\n"
        "  skuvision compare --wandb my-team/skuvision --group finetune_synthetic-2026-11-27_10-00-00",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("dirs", nargs="*", metavar="DIR", help="a multirun dir (its job dirs are found) or run dirs")
    c.add_argument(
        "--out",
        default=None,
        help="where to write compare.{md,csv,png} (default: the one DIR given, else the current dir)",
    )
    c.add_argument(
        "--wandb",
        default=None,
        metavar="ENTITY/PROJECT",
        help="read the runs from the W&B API instead of dirs (online; needs WANDB_API_KEY)",
    )
    c.add_argument("--group", default=None, help="with --wandb: the sweep's W&B group")
    c.add_argument("--no-plot", action="store_true", help="skip compare.png")
    c.set_defaults(fn=_cmd_compare)
    _add_deploy_parsers(sub)
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
