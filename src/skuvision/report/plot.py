"""``compare.png``: accuracy and training cost against what the sweep varies, one labelled point per job.

Left: test and val top-1 (top-5 dashed) per run. Right: seconds per training epoch, each point labelled
with its trainable parameter count, so the trade-off reads off one picture. The x axis is the varying
override itself when it is the only one and numeric (freeze depth 0..5), else one slot per run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Deferred on purpose: matplotlib loads only when a plot is drawn.


def _x_axis(rows: list[dict], keys: list[str]) -> tuple[list[float], list[str], str]:
    if len(keys) == 1:
        values = [row[keys[0]] for row in rows]
        try:
            return [float(v) for v in values], [str(v) for v in values], keys[0]
        except (TypeError, ValueError):
            pass
    labels = [",".join(f"{k.split('.')[-1]}={row[k]}" for k in keys) or row["run"] for row in rows]
    return [float(i) for i in range(len(rows))], labels, " / ".join(keys) or "run"


def _series(ax, xs: list[float], ys: list[Any], **style) -> list[tuple[float, float]]:
    points = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], **style)
    return points


def plot_comparison(rows: list[dict], keys: list[str], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, labels, xlabel = _x_axis(rows, keys)
    fig, (acc_ax, time_ax) = plt.subplots(1, 2, figsize=(12, 4.6), constrained_layout=True)
    test = _series(acc_ax, xs, [r["test/top1"] for r in rows], marker="o", label="test top-1")
    _series(acc_ax, xs, [r["val/top1"] for r in rows], marker="s", alpha=0.7, label="val top-1 (best epoch)")
    _series(acc_ax, xs, [r["test/top5"] for r in rows], marker=".", linestyle="--", alpha=0.5, label="test top-5")
    for x, y in test:
        acc_ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    acc_ax.set(title="accuracy", xlabel=xlabel, ylabel="top-1 / top-5")
    acc_ax.legend(fontsize=8, loc="best")

    per_epoch = [r["s/epoch"] for r in rows]
    points = _series(time_ax, xs, per_epoch, marker="o", color="tab:red")
    trainable = {x: r["trainable params"] for x, r in zip(xs, rows)}
    for x, y in points:
        params = trainable.get(x)
        text = (f"{y:.1f}s" if y >= 10 else f"{y:.2f}s") + (
            f"\n{params / 1e6:.2f}M train." if params is not None else ""
        )
        time_ax.annotate(text, (x, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    time_ax.set(title="training cost", xlabel=xlabel, ylabel="seconds per training epoch")
    if points:
        top = max(y for _, y in points)
        time_ax.set_ylim(0, top * 1.3)
    for ax in (acc_ax, time_ax):
        ax.set_xticks(xs, labels, rotation=30 if max(map(len, labels), default=0) > 8 else 0, fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
