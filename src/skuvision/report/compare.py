"""``skuvision compare``: one table and one plot for a sweep, from run dirs or a W&B group.

The table has what the freeze-depth question needs: the overrides that differ between runs, val/test
top-1 and top-5, trainable parameters, training time (total and per epoch) and images/s. Rows are sorted
by the varying overrides (numerically where they are numbers). Written next to the runs (the multirun
dir) unless ``--out`` says otherwise: ``compare.md``, ``compare.csv``, ``compare.png``; when ``seed`` is one
of the varying overrides, also ``compare_seeds.{md,csv}``: each setting's mean and std over its seeds.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from skuvision.report.plot import plot_comparison
from skuvision.report.runs import Run, load_local_runs, load_wandb_runs

log = logging.getLogger(__name__)

# (column, metrics.json key or computed name, format)
METRIC_COLUMNS = [
    ("val/top1", "val/top1", "{:.4f}"),
    ("test/top1", "test/top1", "{:.4f}"),
    ("test/top5", "test/top5", "{:.4f}"),
    ("trainable params", "params/trainable", "{:,.0f}"),
    ("train s", "train/seconds", "{:.1f}"),
    ("s/epoch", "train/seconds_per_epoch", "{:.2f}"),
    ("images/s", "train/images_per_sec", "{:.1f}"),
]
IGNORED_PREFIXES = ("hydra.", "paths.")


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def varying_keys(runs: list[Run]) -> list[str]:
    """Override keys whose value differs between runs (missing counts as a value), in first-seen order."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides if not k.startswith(IGNORED_PREFIXES)))
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def _sort_key(run: Run, keys: list[str]) -> tuple:
    parts = []
    for k in keys:
        v = run.overrides.get(k, "")
        n = _number(v)
        parts.append((0, n, "") if n is not None else (1, 0.0, v))
    return (*parts, [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", run.label)])


def metric(run: Run, key: str) -> float | None:
    if key == "train/seconds_per_epoch":
        seconds, epochs = _number(run.metrics.get("train/seconds")), _number(run.metrics.get("epochs"))
        return seconds / epochs if seconds is not None and epochs else None
    return _number(run.metrics.get(key))


def build_table(runs: list[Run]) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and rows (raw values); rows sorted by the varying overrides."""
    keys = varying_keys(runs)
    runs = sorted(runs, key=lambda r: _sort_key(r, keys))
    header = ["run", *keys, *(c for c, _, _ in METRIC_COLUMNS), "status"]
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.label, **{k: run.overrides.get(k, "") for k in keys}}
        row.update({col: metric(run, key) for col, key, _ in METRIC_COLUMNS})
        row["status"] = run.status
        rows.append(row)
    return header, rows


SEED_KEY = "seed"
SEED_METRICS = ("val/top1", "test/top1")


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); None where there are too few values for either."""
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def seed_table(runs: list[Run]) -> tuple[list[str], list[dict[str, Any]]] | None:
    """One row per setting of the other varying overrides: its runs' seeds, mean and std of val/test top-1.

    Why: two runs of one recipe that differ only in ``seed`` land points apart on a few hundred val
    images, so a sweep that repeats each candidate over seeds (``-m seed=1,2,3 model.x=a,b``) is ranked
    by these means, with the std saying how far one run can be trusted. None when ``seed`` does not vary.
    """
    keys = varying_keys(runs)
    if SEED_KEY not in keys:
        return None
    others = [k for k in keys if k != SEED_KEY]
    groups: dict[tuple, list[Run]] = {}
    for run in sorted(runs, key=lambda r: _sort_key(r, others)):
        groups.setdefault(tuple(run.overrides.get(k, "") for k in others), []).append(run)
    header = [*others, "seeds", "runs"]
    for m in SEED_METRICS:
        header += [f"{m} mean", f"{m} std"]
    rows = []
    for values, members in groups.items():
        done = [r for r in members if r.status == "ok"]
        row: dict[str, Any] = dict(zip(others, values))
        row["seeds"] = ",".join(r.overrides.get(SEED_KEY, "(default)") for r in done)
        row["runs"] = f"{len(done)}/{len(members)}"
        for m in SEED_METRICS:
            row[f"{m} mean"], row[f"{m} std"] = _mean_std([v for r in done if (v := metric(r, m)) is not None])
        rows.append(row)
    return header, rows


def _is_metric(col: str) -> bool:
    return any(c == col for c, _, _ in METRIC_COLUMNS) or col.endswith((" mean", " std"))


def _fmt(col: str, value: Any) -> str:
    fmt = next((f for c, _, f in METRIC_COLUMNS if c == col), "{:.4f}" if col.endswith((" mean", " std")) else None)
    if value is None or value == "":
        return "—" if fmt else str(value)
    return fmt.format(value) if fmt else str(value)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def write_csv(header: list[str], rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)
    return path


def write_markdown(header: list[str], rows: list[dict], path: Path, title: str) -> Path:
    lines = [
        f"# {title}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if _is_metric(h) else "---" for h in header) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(h, row[h]).replace("|", "\\|") for h in header) + " |" for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def print_table(header: list[str], rows: list[dict], title: str) -> None:
    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="right" if _is_metric(h) else "left")
    for row in rows:
        table.add_row(*(_fmt(h, row[h]) for h in header))
    Console(width=max(shutil.get_terminal_size((200, 24)).columns, 160)).print(table)


def default_out_dir(dirs: list[str]) -> Path:
    """The one dir given (the multirun dir), else the current directory."""
    return Path(dirs[0]) if len(dirs) == 1 else Path.cwd()


def compare(
    dirs: list[str] | None = None,
    out: str | None = None,
    wandb_path: str | None = None,
    group: str | None = None,
    plot: bool = True,
) -> dict[str, Path]:
    """Build, print and write the comparison; returns the written files by kind."""
    if wandb_path:
        runs, source = load_wandb_runs(wandb_path, group or ""), f"W&B {wandb_path} group {group}"
        out_dir = Path(out) if out else Path.cwd()
    else:
        runs, source = load_local_runs(list(dirs or [])), ", ".join(str(d) for d in dirs or [])
        out_dir = Path(out) if out else default_out_dir(list(dirs or []))
    header, rows = build_table(runs)
    keys = varying_keys(runs)
    title = f"{len(rows)} runs of {source}" + (f", varying {', '.join(keys)}" if keys else "")
    print_table(header, rows, title)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "csv": write_csv(header, rows, out_dir / "compare.csv"),
        "md": write_markdown(header, rows, out_dir / "compare.md", title),
    }
    seeds = seed_table(runs)
    if seeds is not None:
        seed_header, seed_rows = seeds
        seed_title = f"{len(seed_rows)} settings over seeds: mean and std (n - 1) of each setting's runs"
        print_table(seed_header, seed_rows, seed_title)
        written["seeds_csv"] = write_csv(seed_header, seed_rows, out_dir / "compare_seeds.csv")
        written["seeds_md"] = write_markdown(seed_header, seed_rows, out_dir / "compare_seeds.md", seed_title)
    if plot:
        written["png"] = plot_comparison(rows, keys, out_dir / "compare.png", title)
    missing = [r["run"] for r in rows if r["status"] != "ok"]
    if missing:
        log.warning("%d run(s) without metrics: %s", len(missing), ", ".join(missing))
    print(f"wrote {', '.join(str(p) for p in written.values())}")
    return written
