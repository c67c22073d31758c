#!/usr/bin/env python
"""Start-up time of the command lines: `skuvision --help`, `python train.py --help`, `skuvision summary`.

What a user waits for before anything happens, and what Hydra pays on every job for plugin
discovery. Each command runs ``--repeat`` times from a directory outside the project, alternating
between this checkout and ``--baseline`` (a git revision, checked out into a temporary worktree
and put first on PYTHONPATH), so both sides see the same machine load; medians and ratios are
written to BENCHMARKS.md's ``startup`` section.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark_common import ROOT, fmt_spread, machine, publish, spread

COMMANDS = {
    "skuvision --help": lambda root: [sys.executable, "-m", "skuvision.cli", "--help"],
    "python train.py --help": lambda root: [sys.executable, str(root / "train.py"), "--help"],
    "skuvision summary (quickstart)": lambda root: [
        sys.executable,
        "-m",
        "skuvision.cli",
        "summary",
        "experiment=quickstart",
        "model.num_classes=81",
        "--json",
    ],
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default="ae569f1", help="git revision to compare against (default: before issue 19)")
    p.add_argument("--repeat", type=int, default=5, help="runs per command and side")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-markdown", action="store_true")
    return p.parse_args(argv)


def seconds(command: list[str], root: Path, cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "SKUVISION_CONF": str(root / "conf")}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"benchmark_startup: error: {' '.join(command)} failed in {root}: {result.stderr[-500:]}")
    return time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.baseline], check=True)
        try:
            sides = {"baseline": base, "now": ROOT}
            times = {name: {side: [] for side in sides} for name in COMMANDS}
            for _ in range(args.repeat):
                for name, make in COMMANDS.items():
                    for side, root in sides.items():
                        times[name][side].append(seconds(make(root), root, Path(tmp)))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    rows = [
        "## Start-up of the command lines (`scripts/benchmark_startup.py`)",
        "",
        f"Median (range) seconds of {args.repeat} runs each from a directory outside the project, alternating "
        f"between the baseline `{args.baseline}` and this checkout; {machine()}.",
        "",
        "| command | baseline s | now s | now / baseline |",
        "|---|---|---|---|",
    ]
    results = {}
    for name, sides in times.items():
        before, after = spread(sides["baseline"]), spread(sides["now"])
        results[name] = {"baseline": before, "now": after, "ratio": after["median"] / before["median"]}
        rows.append(f"| `{name}` | {fmt_spread(before, 2)} | {fmt_spread(after, 2)} | {results[name]['ratio']:.2f} |")
    return publish("startup", "\n".join(rows), results, args)


if __name__ == "__main__":
    sys.exit(main())
