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
    b.add_argument("--out", required=True, help="output shard directory")
    b.add_argument("--size", type=int, default=320, help="shorter side after resizing (never upscales)")
    b.add_argument("--quality", type=int, default=90, help="JPEG quality of the re-encoded images")
    b.add_argument("--val", type=float, default=0.1, help="validation fraction")
    b.add_argument("--test", type=float, default=0.1, help="test fraction")
    b.add_argument("--label-map", default=None,
                   help="previous label_map.json or manifest.json: existing SKUs keep their index, new ones are appended")
    b.add_argument("--dedup-distance", type=int, default=4,
                   help="perceptual-hash bits under which two images of a SKU are near-duplicates (-1 disables)")
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
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
