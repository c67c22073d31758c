"""``skuvision`` command line: synthetic data, shards, model summary, sweep comparison, export/predict/evaluate."""

from __future__ import annotations

import argparse
import sys

import skuvision  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from skuvision.data.build_settings import RESOURCE_CONFIG, BuildSettings, all_cores
from skuvision.errors import exit_on_user_error

HELP = argparse.ArgumentDefaultsHelpFormatter
EXAMPLES = argparse.RawDescriptionHelpFormatter  # keeps the epilog's example lines as written


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _add_export(sub) -> None:
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
        formatter_class=EXAMPLES,
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
    e.set_defaults(command_name="export")


def _add_predict(sub) -> None:
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
        formatter_class=EXAMPLES,
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
    p.set_defaults(command_name="predict")


def _add_evaluate(sub) -> None:
    v = sub.add_parser(
        "evaluate",
        help="a model on a shard split -> metrics.json, per_sku.csv, confusions.{csv,png}",
        description="Evaluate an export dir or a checkpoint on a split of a shard dir (SKUs matched by id). "
        "Writes metrics.json (top-1/top-5, per-brand and per-category accuracy), per_sku.csv "
        "(worst first), confusions.csv (most frequent true -> predicted SKU pairs with counts, "
        "brands and a same-brand flag) and confusions.png (the worst SKUs' confusion matrix).",
        epilog="example:\n  skuvision evaluate export/ data/shards --split test --out reports/eval",
        formatter_class=EXAMPLES,
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
    v.add_argument(
        "--crops",
        type=int,
        choices=(1, 3, 5),
        default=1,
        help="views per image, softmax-averaged: 1 the centre crop (default), 3 + both ends of the long side, "
        "5 + the four corners; a run with data.test_crops=N tested this way (experiment=photos: 5)",
    )
    v.add_argument(
        "--crop-pct",
        type=float,
        default=None,
        metavar="P",
        help="the crops' share of the resized shorter side (default: the model's, e.g. 0.875); a run with "
        "data.test_crop_pct=P tested this way",
    )
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(command_name="evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skuvision", description=__doc__, formatter_class=HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_synth(sub)
    shards = sub.add_parser("shards", help="build, merge or verify litdata shards").add_subparsers(
        dest="shards_cmd", required=True
    )
    _add_shards_build(shards)
    _add_shards_merge(shards)
    _add_shards_verify(shards)
    _add_summary(sub)
    _add_compare(sub)
    _add_export(sub)
    _add_predict(sub)
    _add_evaluate(sub)
    return parser


def _add_synth(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="render a synthetic catalogue of packaged products",
        description="Render DIR/<sku_id>/<n>.jpg and DIR/catalogue.csv: SKUs in brand families, "
        "each image a new camera view. Deterministic per --seed.",
        formatter_class=HELP,
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
    p.set_defaults(command_name="synth")


def _add_shards_build(shards) -> None:
    defaults = BuildSettings()
    b = shards.add_parser(
        "build",
        help="images -> litdata shards + manifest.json",
        description="Check, downscale and re-encode every image, split train/val/test per SKU at "
        "the requested fractions in content-hash order (stable when images are added "
        "with --label-map; near-duplicates kept together), "
        "and write litdata chunks per split, manifest.json and rejects.csv.",
        formatter_class=HELP,
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
    b.add_argument("--size", type=int, default=defaults.size, help="shorter side after resizing (never upscales)")
    b.add_argument("--quality", type=int, default=defaults.quality, help="JPEG quality of the re-encoded images")
    b.add_argument("--val", type=float, default=defaults.val, help="validation fraction")
    b.add_argument("--test", type=float, default=defaults.test, help="test fraction")
    b.add_argument(
        "--label-map",
        default=None,
        help="previous label_map.json or manifest.json (local or s3://): existing SKUs keep their index, "
        "new ones are appended",
    )
    b.add_argument(
        "--dedup-distance",
        type=int,
        default=defaults.dedup_distance,
        help="two images of a SKU whose perceptual hashes differ by at most this many bits (of 64) are "
        "near-duplicates and share a split (-1 disables)",
    )
    b.add_argument("--workers", type=int, default=all_cores(), help="parallel processes")
    b.add_argument(
        "--partitions",
        type=_positive_int,
        default=None,
        metavar="P",
        help="cut the build into P partitions of whole SKUs (balanced by images); build one with --partition K, "
        "then join them with `skuvision shards merge OUT`",
    )
    b.add_argument(
        "--partition",
        default=None,
        metavar="K|host",
        help="with --partitions: which one, 0..P-1; `host`: every partition of this instance in a SageMaker "
        "Processing job (K mod instances = its rank among the hosts of --resource-config)",
    )
    b.add_argument(
        "--resource-config",
        default=RESOURCE_CONFIG,
        metavar="JSON",
        help="with --partition host: the instance's current_host and hosts",
    )
    _add_on_sagemaker(b)
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(command_name="shards build")


def _add_on_sagemaker(b) -> None:
    g = b.add_argument_group(
        "on SageMaker", "one Processing job: N instances build the partitions of their rank, the first merges"
    )
    g.add_argument("--on", choices=["local", "sagemaker"], default="local", help="where the build runs")
    g.add_argument("--instances", type=_positive_int, default=1, metavar="N", help="instances (default 1)")
    g.add_argument("--instance-type", default="ml.c5.9xlarge", help="instance type (default ml.c5.9xlarge)")
    g.add_argument(
        "--launcher-config",
        default=None,
        metavar="YAML",
        help="the training launcher's settings (role, image_uri, region, subnets, security_group_ids, tags, "
        "volume_size_gb, s3_prefix, ...); unset keys keep hydra/launcher=sagemaker's defaults",
    )
    g.add_argument("--dry-run", action="store_true", help="print the CreateProcessingJob request, submit nothing")
    g.add_argument(
        "--retry-partition",
        default=None,
        metavar="K[,K...]",
        help="submit a one-instance job that rebuilds these partitions alone, then merges",
    )
    g.add_argument(
        "--merge-timeout",
        type=_positive_int,
        default=1800,
        metavar="S",
        help="seconds the merging instance waits for the others' partitions (default 1800)",
    )


def _add_shards_merge(shards) -> None:
    m = shards.add_parser(
        "merge",
        help="join a partitioned build's partitions into one shard set",
        description="Check that OUT/partitions holds all P partitions of one build, complete, then write "
        "OUT/{train,val,test}, manifest.json and rejects.csv as a one-machine build would.",
    )
    m.add_argument("out", metavar="OUT", help="the --out the partitions were built into")
    m.add_argument(
        "--workers",
        type=_positive_int,
        default=all_cores(),
        help="processes rewriting the samples (each writes contiguous ranges of a split; the order is kept)",
    )
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(command_name="shards merge")


def _add_shards_verify(shards) -> None:
    v = shards.add_parser("verify", help="read every sample and check counts against the manifest")
    v.add_argument("dir", help="shard directory")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(command_name="shards verify")


def _add_summary(sub) -> None:
    s = sub.add_parser(
        "summary",
        help="parameter table (total/trainable/per stage) for a config, no data needed",
        description="e.g. skuvision summary experiment=resnet152_fmcg model.num_classes=12000",
    )
    s.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    s.add_argument("--json", action="store_true", help="print one JSON object (keys total, trainable, stages, ...)")
    s.set_defaults(command_name="summary")


def _add_compare(sub) -> None:
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
        formatter_class=EXAMPLES,
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
    c.set_defaults(command_name="compare")


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # the one deferred import: the handlers load torch and litdata, which `skuvision --help` must not wait for
    from skuvision.commands import run_command

    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
