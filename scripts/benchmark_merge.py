"""`shards merge` with one writer vs several: wall time, CPU, peak RSS, and the same samples either way.

Builds P partitions of ``--input`` once (kept under ``--work/built``; reused while all P
``partial.json`` are there: delete it after changing --input or --size), then merges copies of them
with each ``--workers`` value, every merge a ``skuvision shards merge`` process of its own (CPU and
peak RSS of it and its writer processes, from that process's own rusage). The first value is the baseline of the ratios. Checks that every merge wrote
the same samples, labels and keys per split, in the same order, as the first.

    python scripts/benchmark_merge.py --input /data/GroceryStoreDataset/dataset --size 320 --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from litdata import StreamingDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from skuvision.data.splits import SPLITS  # noqa: E402

SKUVISION = [sys.executable, "-m", "skuvision.cli"]


def build_partitions(args, where: Path) -> None:
    if all(
        (where / "partitions" / f"{k}-of-{args.partitions}" / "partial.json").is_file() for k in range(args.partitions)
    ):
        return
    shutil.rmtree(where, ignore_errors=True)
    for k in range(args.partitions):
        flags = ["--size", str(args.size), "--workers", str(args.build_workers), "--quiet"]
        flags += ["--partitions", str(args.partitions), "--partition", str(k)]
        subprocess.run([*SKUVISION, "shards", "build", "--input", args.input, "--out", str(where), *flags], check=True)


def merge(partitions: Path, out: Path, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copytree(partitions / "partitions", out / "partitions")
    command = [*SKUVISION, "shards", "merge", str(out), "--workers", str(workers), "--quiet"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # this merge's own rusage (its writers included), not the running maximum of every child so far
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed; run it by hand to see why")
    cpu = usage.ru_utime + usage.ru_stime
    manifest = json.loads((out / "manifest.json").read_text())
    samples = sum(manifest["splits"][s]["count"] for s in SPLITS)
    phases = manifest["partitions"]["merge_seconds"]  # inside the merge: after imports, listing and checks
    return {
        "workers": workers,
        "wall_s": wall,
        "cpu_s": cpu,
        "decide_s": phases["decide"],
        "write_s": phases["write"],
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "samples": samples,
    }


def split_samples(out: Path) -> list:
    """Every split's (bytes, label, key) in order: what must not depend on the number of writers."""
    result = []
    for split in SPLITS:
        dataset = StreamingDataset(str(out / split), shuffle=False)
        result.append(
            [(bytes(s["image"]), int(s["label"]), s["key"]) for s in (dataset[i] for i in range(len(dataset)))]
        )
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="originals: an ImageFolder tree or a CSV listing")
    p.add_argument("--work", default=str(ROOT / "data" / "benchmark" / "merge"), help="partitions and merges go here")
    p.add_argument("--size", type=int, default=320, help="shard image size (shards build --size)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--build-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--workers", default="1,2", help="merge writer processes to compare; the first is the baseline")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON too")
    args = p.parse_args(argv)
    work = Path(args.work)
    build_partitions(args, work / "built")
    rows, reference = [], None
    for workers in [int(w) for w in args.workers.split(",")]:
        out = work / f"merged-w{workers}"
        row = merge(work / "built", out, workers)
        got = split_samples(out)
        reference = reference or got
        row["same_samples_as_first"] = got == reference
        rows.append(row)
        shutil.rmtree(out)
    base = rows[0]
    print(
        f"`python scripts/benchmark_merge.py --input {args.input} --size {args.size} --partitions {args.partitions} "
        f"--workers {args.workers}` — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; {base['samples']} samples merged from "
        f"{args.partitions} partitions, each merge its own process.\n"
    )
    print(
        "| merge writers | command wall s | × | of which: decide s | write s | × write | CPU s (all processes) "
        "| peak RSS MiB | same samples |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['wall_s']:.1f} | {base['wall_s'] / r['wall_s']:.2f} | {r['decide_s']:.1f} | "
            f"{r['write_s']:.1f} | {base['write_s'] / r['write_s']:.2f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:.0f} | "
            f"{'yes' if r['same_samples_as_first'] else 'NO'} |"
        )
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0 if all(r["same_samples_as_first"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
