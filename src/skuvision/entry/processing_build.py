"""What every instance of the shard-build Processing job runs: ``python -m skuvision.entry.processing_build ...``.

Each instance builds the partitions of its rank (``resourceconfig.json``, hosts sorted by name; the
path can be overridden with ``SKUVISION_RESOURCE_CONFIG`` for a local rehearsal); the first host then
waits, bounded by ``--merge-timeout``, for every partition's completion marker and merges. On timeout
it exits 2 with one line naming the missing partitions and the ``--retry-partition K,...`` command
that rebuilds them (no instance of a Processing job can be retried alone). ``--retry-partition
K[,K...]`` (a one-instance job) rebuilds those partitions alone, then merges.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from skuvision.commands.data import build_settings, print_build_summary
from skuvision.data.build_settings import RESOURCE_CONFIG, BuildSettings
from skuvision.data.partition_merge import merge_partitions, wait_for_partitions
from skuvision.data.partitions import build_partition, host_rank, partition_list, partition_name, partitions_of_host
from skuvision.errors import DataError, exit_on_user_error

BUILD_FLAGS = ("size", "quality", "val", "test", "dedup_distance", "label_map")


def parse(argv: list[str] | None) -> argparse.Namespace:
    defaults = BuildSettings()
    p = argparse.ArgumentParser(prog="python -m skuvision.entry.processing_build")
    p.add_argument("--input", required=True, help="the originals: s3:// prefix or CSV, or a path in the container")
    p.add_argument("--out", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--retry-partition", type=partition_list, default=None, metavar="K[,K...]")
    p.add_argument("--submitted-with", default="", help="the submitting command's own flags, for the retry command")
    p.add_argument("--merge-timeout", type=float, default=1800.0, help="seconds the first host waits for the others")
    p.add_argument("--poll", type=float, default=10.0)
    p.add_argument("--size", type=int, default=defaults.size)
    p.add_argument("--quality", type=int, default=defaults.quality)
    p.add_argument("--val", type=float, default=defaults.val)
    p.add_argument("--test", type=float, default=defaults.test)
    p.add_argument("--dedup-distance", type=int, default=defaults.dedup_distance)
    p.add_argument("--label-map", default=None)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def retry_command(args: argparse.Namespace, missing: list[int]) -> str:
    """The `skuvision shards build ... --on sagemaker --retry-partition K,...` that reruns ``missing`` alone."""
    flags = []
    for name in BUILD_FLAGS:
        value = getattr(args, name)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    line = ["skuvision", "shards", "build", "--input", args.input, "--out", args.out]
    line += [
        "--partitions",
        str(args.partitions),
        *flags,
        "--on",
        "sagemaker",
        "--retry-partition",
        ",".join(map(str, missing)),
        *shlex.split(args.submitted_with),
    ]
    return shlex.join(line)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    config = os.environ.get("SKUVISION_RESOURCE_CONFIG", RESOURCE_CONFIG)
    retry = args.retry_partition is not None
    mine = args.retry_partition if retry else partitions_of_host(config, args.partitions)
    for k in mine:
        build_partition(
            args.input, args.out, build_settings(args), args.partitions, k, args.label_map, progress=not args.quiet
        )
        print(f"{args.out}/partitions/{partition_name(k, args.partitions)}: built", flush=True)
    if not retry and host_rank(config)[0] != 0:
        return 0  # the first host merges
    missing = wait_for_partitions(args.out, args.partitions, args.merge_timeout, args.poll)
    if missing:
        names = ", ".join(partition_name(k, args.partitions) for k in missing)
        raise DataError(
            f"{args.out}: partition(s) {names} not complete after {args.merge_timeout:g} s; rebuild them and "
            f"merge with `{retry_command(args, missing)}`"
        )
    print_build_summary(args.out, merge_partitions(args.out, progress=not args.quiet, workers=args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
