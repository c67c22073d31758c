"""``skuvision synth`` and ``skuvision shards build|verify``."""

from __future__ import annotations

import argparse
import sys

from skuvision.data.build_settings import BuildSettings
from skuvision.data.manifest import read_manifest
from skuvision.data.partition_merge import merge_partitions
from skuvision.data.partitions import build_partition, partition_list, partition_name, partitions_of_host
from skuvision.data.remote import is_s3
from skuvision.data.shard_verify import verify_shards
from skuvision.data.shards import build_shards
from skuvision.data.synthetic import write_catalogue
from skuvision.errors import UserError


def synth(args: argparse.Namespace) -> int:
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


def build_settings(args: argparse.Namespace) -> BuildSettings:
    return BuildSettings(
        size=args.size,
        quality=args.quality,
        val=args.val,
        test=args.test,
        dedup_distance=args.dedup_distance,
        workers=args.workers,
    )


def shards_build(args: argparse.Namespace) -> int:
    if args.on == "sagemaker":
        return _build_on_sagemaker(args)
    if args.retry_partition is not None:
        raise UserError("--retry-partition K goes with --on sagemaker; locally, rebuild with --partition K")
    if args.dry_run or args.launcher_config or args.instances != 1:
        raise UserError("--instances, --launcher-config and --dry-run go with --on sagemaker")
    if (args.partitions is None) != (args.partition is None):
        raise UserError("--partitions P and --partition K go together: P partitions, and which one (0..P-1) to build")
    if args.partitions is not None:
        return _build_partition(args)
    manifest = build_shards(
        args.input, args.out, build_settings(args), label_map_path=args.label_map, progress=not args.quiet
    )
    print_build_summary(args.out, manifest)
    return 0


def _build_partition(args: argparse.Namespace) -> int:
    if args.partition == "host":
        mine = partitions_of_host(args.resource_config, args.partitions)
    elif args.partition.isdigit():
        mine = [int(args.partition)]
    else:
        raise UserError(f"--partition {args.partition}: pass a number 0..{args.partitions - 1} or `host`")
    for k in mine:
        record = build_partition(
            args.input,
            args.out,
            build_settings(args),
            args.partitions,
            k,
            label_map_path=args.label_map,
            progress=not args.quiet,
        )
        images = sum(record["counts"].values())
        where = f"{args.out}/partitions/{partition_name(k, args.partitions)}"
        print(f"{where}: {len(record['skus'])} SKUs, {images} images; merge with `skuvision shards merge {args.out}`")
    return 0


def _build_on_sagemaker(args: argparse.Namespace) -> int:
    """Submit the build as one SageMaker Processing job (``skuvision.sagemaker.processing``)."""
    from skuvision.sagemaker.processing import ShardBuildJob, describe_request, launcher_settings, submit_shard_build

    if args.partition is not None:
        raise UserError("--partition goes with a local build; --on sagemaker assigns partitions to instances")
    retry = partition_list(args.retry_partition) if args.retry_partition is not None else []
    if retry and args.partitions is None:
        raise UserError("--retry-partition K needs --partitions P: the P of the build whose partition K it rebuilds")
    settings = launcher_settings(
        args.launcher_config,
        instance_type=args.instance_type,
        instance_count=1 if retry else args.instances,
        dry_run=args.dry_run or None,
    )
    job = ShardBuildJob(
        input=args.input,
        out=args.out,
        partitions=args.partitions or args.instances,
        build_args=tuple(_build_flags(args)),
        retry_partitions=tuple(retry),
        merge_timeout=args.merge_timeout,
        submitted_with=("--instance-type", args.instance_type)
        + (("--launcher-config", args.launcher_config) if args.launcher_config else ()),
    )
    name, request = submit_shard_build(job, settings)
    if settings.dry_run:
        print(describe_request(request))
        print(f"dry run: {name} not submitted")
        return 0
    what = (
        f"rebuilds partition(s) {args.retry_partition}, then merges"
        if retry
        else f"{settings.instance_count} instance(s)"
    )
    print(f"submitted SageMaker Processing job {name} ({what}); the shards land in {args.out}")
    return 0


def _build_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--size", str(args.size), "--quality", str(args.quality), "--val", str(args.val), "--test", str(args.test)]
    flags += ["--dedup-distance", str(args.dedup_distance)]
    return flags + (["--label-map", args.label_map] if args.label_map else [])


def shards_merge(args: argparse.Namespace) -> int:
    manifest = merge_partitions(args.out, progress=not args.quiet, workers=args.workers)
    print_build_summary(args.out, manifest)
    return 0


def print_build_summary(out: str, manifest: dict) -> None:
    counts = ", ".join(f"{s} {i['count']}" for s, i in manifest["splits"].items())
    print(
        f"{out}: {manifest['num_classes']} SKUs; {counts}; {manifest['rejects']} rejected "
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


def shards_verify(args: argparse.Namespace) -> int:
    problems = verify_shards(args.dir, progress=not args.quiet)
    for problem in problems:
        print(f"MISMATCH {problem}", file=sys.stderr)
    if problems:
        print(f"{args.dir}: {len(problems)} problem(s); rebuild with `skuvision shards build`", file=sys.stderr)
        return 1
    hashed = not is_s3(args.dir) and bool(read_manifest(args.dir).get("chunk_sha256"))
    print(
        f"{args.dir}: {'every chunk matches its sha256, ' if hashed else ''}every sample decodes and counts match the manifest"
    )
    return 0
