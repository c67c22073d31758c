"""Helpers shared by the benchmark scripts: timing statistics, sizes, and BENCHMARKS.md sections.

Every benchmark writes its own section of BENCHMARKS.md between
``<!-- BEGIN name -->`` and ``<!-- END name -->`` and leaves the rest of the file
alone, so several benchmarks (and people) can share the file.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def spread(values: list[float]) -> dict:
    """Median and range of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": list(values)}


def fmt_spread(s: dict, digits: int = 0) -> str:
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}–{s['max']:,.{digits}f})"


def dir_bytes(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; the architecture elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    return f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} CPUs visible, Python {platform.python_version()}"


def load_average() -> str:
    """The 1, 5 and 15 min load averages: how shared the cores were while a benchmark ran."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> Path:
    """Replace (or append) the ``name`` section of BENCHMARKS.md, keeping every other section."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nFigures written by `scripts/benchmark_*.py`; rerun them to refresh.\n\n"
    )
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    path.write_text(text)
    return path


def publish(name: str, table: str, results: dict, args) -> int:
    """The end of every benchmark: refresh its BENCHMARKS.md section (unless --no-markdown), print JSON or the table."""
    import json

    if not args.no_markdown:
        write_section(name, table)
    print(json.dumps(results, indent=1) if args.json else table)
    return 0
