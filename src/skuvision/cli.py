"""``skuvision`` command line: synthetic data, shards, model summary, sweep comparison."""

from __future__ import annotations

import argparse
import json
import sys

import skuvision  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from skuvision.cli_errors import exit_on_user_error


def _cmd_synth(args: argparse.Namespace) -> int:
    from skuvision.data.synthetic import write_catalogue

    csv_path = write_catalogue(args.out, args.skus, args.images_per_sku, size=args.size, seed=args.seed,
                               workers=args.workers, quality=args.quality)
    print(f"wrote {args.skus * args.images_per_sku} images and {csv_path}")
    return 0


def _cmd_shards_build(args: argparse.Namespace) -> int:
    from skuvision.data.shards import BuildSettings, build_shards

    settings = BuildSettings(size=args.size, quality=args.quality, val=args.val, test=args.test,
                             dedup_distance=args.dedup_distance, workers=args.workers)
    manifest = build_shards(args.input, args.out, settings, label_map_path=args.label_map, progress=not args.quiet)
    counts = ", ".join(f"{s} {i['count']}" for s, i in manifest["splits"].items())
    print(f"{args.out}: {manifest['num_classes']} SKUs; {counts}; {manifest['rejects']} rejected "
          f"(see rejects.csv); manifest.json written")
    return 0


def _cmd_shards_verify(args: argparse.Namespace) -> int:
    from skuvision.data.shards import verify_shards

    problems = verify_shards(args.dir, progress=not args.quiet)
    for problem in problems:
        print(f"MISMATCH {problem}", file=sys.stderr)
    if problems:
        print(f"{args.dir}: {len(problems)} problem(s); rebuild with `skuvision shards build`", file=sys.stderr)
        return 1
    print(f"{args.dir}: every sample decodes and counts match the manifest")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skuvision", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render a synthetic catalogue of packaged products",
                       description="Render DIR/<sku_id>/<n>.jpg and DIR/catalogue.csv: SKUs in brand families, "
                                   "each image a new camera view. Deterministic per --seed.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--skus", type=int, required=True, help="number of SKUs")
    p.add_argument("--images-per-sku", type=int, required=True, help="images per SKU")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="catalogue seed; different seeds give disjoint SKUs and brands")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.set_defaults(fn=_cmd_synth)

    shards = sub.add_parser("shards", help="build or verify litdata shards").add_subparsers(dest="shards_cmd", required=True)
    b = shards.add_parser("build", help="images -> litdata shards + manifest.json",
                          description="Check, downscale and re-encode every image, split train/val/test per SKU by "
                                      "content hash (stable when images are added; near-duplicates kept together), "
                                      "and write litdata chunks per split, manifest.json and rejects.csv.",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--input", required=True, help="ImageFolder DIR/<sku_id>/*.jpg, or a CSV with path,sku_id[,brand,category]")
    b.add_argument("--out", required=True,
                   help="output shard directory, or s3://BUCKET/PREFIX (chunks upload as they are written; endpoint "
                        "and credentials from the usual AWS settings)")
    b.add_argument("--size", type=int, default=320, help="shorter side after resizing (never upscales)")
    b.add_argument("--quality", type=int, default=90, help="JPEG quality of the re-encoded images")
    b.add_argument("--val", type=float, default=0.1, help="validation fraction")
    b.add_argument("--test", type=float, default=0.1, help="test fraction")
    b.add_argument("--label-map", default=None,
                   help="previous label_map.json or manifest.json (local or s3://): existing SKUs keep their index, "
                        "new ones are appended")
    b.add_argument("--dedup-distance", type=int, default=8,
                   help="two images of a SKU whose perceptual hashes differ by at most this many bits (of 64) are "
                        "near-duplicates and share a split (-1 disables)")
    b.add_argument("--workers", type=int, default=max(1, (__import__("os").cpu_count() or 1)), help="parallel processes")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(fn=_cmd_shards_build)
    v = shards.add_parser("verify", help="read every sample and check counts against the manifest")
    v.add_argument("dir", help="shard directory")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(fn=_cmd_shards_verify)

    s = sub.add_parser("summary", help="parameter table (total/trainable/per stage) for a config, no data needed",
                       description="e.g. skuvision summary experiment=resnet152_fmcg model.num_classes=12000")
    s.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    s.add_argument("--json", action="store_true", help="print one JSON object (keys total, trainable, stages, ...)")
    s.set_defaults(fn=_cmd_summary)

    c = sub.add_parser("compare", help="table + plot of a sweep's runs (accuracy vs training cost)",
                       description="Compare the jobs of a sweep: the overrides that differ, val/test top-1/top-5, "
                                   "trainable parameters, training time and images/s. Prints a table and writes "
                                   "compare.md, compare.csv and compare.png (accuracy and seconds/epoch against the "
                                   "varying key, one labelled point per job).",
                       epilog="examples:\n"
                              "  skuvision compare logs/finetune_synthetic/multiruns/2026-11-27_10-00-00\n"
                              "  skuvision compare logs/train/runs/A logs/train/runs/B --out reports/\n"
                              "  skuvision compare --wandb my-team/skuvision --group finetune_synthetic-2026-11-27_10-00-00",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("dirs", nargs="*", metavar="DIR", help="a multirun dir (its job dirs are found) or run dirs")
    c.add_argument("--out", default=None, help="where to write compare.{md,csv,png} (default: the one DIR given, else the current dir)")
    c.add_argument("--wandb", default=None, metavar="ENTITY/PROJECT",
                   help="read the runs from the W&B API instead of dirs (online; needs WANDB_API_KEY)")
    c.add_argument("--group", default=None, help="with --wandb: the sweep's W&B group")
    c.add_argument("--no-plot", action="store_true", help="skip compare.png")
    c.set_defaults(fn=_cmd_compare)
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
