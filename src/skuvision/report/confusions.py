"""Which SKUs are mistaken for which: ``confusions.csv`` and ``confusions.png``.

``per_sku.csv`` says which SKUs are weak; a catalogue manager also needs to know *what* they are
taken for: a look-alike variant of the same brand (new packaging, a flavour that differs in small
print) calls for more photos or merged SKUs, a different brand for a look at the images. A full
confusion matrix is 144 M cells at 12k SKUs, so only the off-diagonal (true, predicted) pairs that
occurred are kept: at most one per misclassified image.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from skuvision.data.labels import LabelMap

# Deferred on purpose: matplotlib loads only when a plot is drawn.

CSV_LIMIT = 1000  # rows of confusions.csv: the most frequent pairs
PLOT_SKUS = 20  # SKUs in confusions.png


def confusion_pairs(true: Iterable[int], pred: Iterable[int]) -> Counter:
    """(true class, predicted class) -> count, for misclassified samples only."""
    return Counter((int(t), int(p)) for t, p in zip(true, pred) if int(t) != int(p))


def _attributes(label_map: dict | None, num_classes: int) -> tuple[list[str], dict, dict]:
    if not label_map:
        return [str(i) for i in range(num_classes)], {}, {}
    lm = LabelMap.from_dict(label_map)
    return lm.skus, lm.brands, lm.categories


def confusion_rows(
    pairs: Mapping[tuple[int, int], int], totals: Sequence[int], label_map: dict | None, limit: int = CSV_LIMIT
) -> list[dict]:
    """The ``limit`` most frequent pairs, most frequent first, with SKU ids, brands and a same-brand flag."""
    skus, brands, categories = _attributes(label_map, len(totals))
    ordered = sorted(
        pairs.items(), key=lambda kv: (-kv[1], -kv[1] / max(1, int(totals[kv[0][0]])), skus[kv[0][0]], skus[kv[0][1]])
    )
    rows = []
    for (t, p), n in ordered[:limit]:
        true_sku, pred_sku = skus[t], skus[p]
        tb, pb = brands.get(true_sku, ""), brands.get(pred_sku, "")
        rows.append(
            {
                "true_sku": true_sku,
                "predicted_sku": pred_sku,
                "count": int(n),
                "true_images": int(totals[t]),
                "share_of_true": round(n / max(1, int(totals[t])), 4),
                "true_brand": tb,
                "predicted_brand": pb,
                "same_brand": ("yes" if tb == pb else "no") if tb and pb else "",
                "true_category": categories.get(true_sku, ""),
                "predicted_category": categories.get(pred_sku, ""),
                "true_index": t,
                "predicted_index": p,
            }
        )
    return rows


def write_confusions_csv(
    path: str | Path,
    pairs: Mapping[tuple[int, int], int],
    totals: Sequence[int],
    label_map: dict | None,
    limit: int = CSV_LIMIT,
) -> Path:
    """``confusions.csv``: one row per (true SKU, predicted SKU) pair seen, most frequent first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = confusion_rows(pairs, totals, label_map, limit)
    fields = [
        "true_sku",
        "predicted_sku",
        "count",
        "true_images",
        "share_of_true",
        "true_brand",
        "predicted_brand",
        "same_brand",
        "true_category",
        "predicted_category",
        "true_index",
        "predicted_index",
    ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_from_tensors(
    report_dir: str | Path, pairs: np.ndarray, totals: Sequence[int], label_map: dict | None
) -> Path:
    """What a training run's test epoch calls: (K, 2) misclassified rows -> ``confusions.csv``."""
    counts = confusion_pairs(pairs[:, 0], pairs[:, 1]) if len(pairs) else Counter()
    return write_confusions_csv(Path(report_dir) / "confusions.csv", counts, [int(t) for t in totals], label_map)


def worst_skus(pairs: Mapping[tuple[int, int], int], totals: Sequence[int], limit: int = PLOT_SKUS) -> list[int]:
    """The classes to plot: the least accurate ones with errors, then what they are taken for, up to ``limit``."""
    errors = Counter()
    for (t, _), n in pairs.items():
        errors[t] += n
    accuracy = lambda c: 1 - errors.get(c, 0) / max(1, int(totals[c]))  # noqa: E731
    by_accuracy = sorted(errors, key=lambda c: (accuracy(c), -errors[c], c))
    chosen: list[int] = []
    for c in by_accuracy:
        if len(chosen) >= limit:
            break
        if c not in chosen:
            chosen.append(c)
        partners = sorted((p for (t, p) in pairs if t == c), key=lambda p: -pairs[(c, p)])
        for p in partners[:2]:
            if p not in chosen and len(chosen) < limit:
                chosen.append(p)
    return sorted(chosen, key=lambda c: (accuracy(c), c))  # rows and columns in one order: the diagonal lines up


def plot_confusions(
    path: str | Path,
    pairs: Mapping[tuple[int, int], int],
    totals: Sequence[int],
    label_map: dict | None,
    limit: int = PLOT_SKUS,
) -> Path:
    """``confusions.png``: row-normalised confusion matrix of the worst SKUs and what they are taken for.

    Rows are true SKUs, columns predicted ones; each cell shows the count, its colour the share of the
    row's test images. "other" collects predictions outside the plotted SKUs, so every row adds up.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    skus, brands, _ = _attributes(label_map, len(totals))
    chosen = worst_skus(pairs, totals, limit)
    fig_side = 3.0 + 0.45 * max(1, len(chosen))
    fig, ax = plt.subplots(figsize=(fig_side + 1.5, fig_side), constrained_layout=True)
    if not chosen:
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center", fontsize=14)
        ax.set_axis_off()
    else:
        index = {c: i for i, c in enumerate(chosen)}
        counts = np.zeros((len(chosen), len(chosen) + 1), dtype=np.int64)
        for r, c in enumerate(chosen):
            wrong = 0
            for (t, p), n in pairs.items():
                if t == c:
                    wrong += n
                    counts[r, index.get(p, len(chosen))] += n
            counts[r, r] += int(totals[c]) - wrong
        shares = counts / np.maximum(1, counts.sum(1, keepdims=True))
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for (r, c), n in np.ndenumerate(counts):
            if n:
                ax.text(
                    c, r, str(n), ha="center", va="center", fontsize=8, color="white" if shares[r, c] > 0.5 else "black"
                )

        def label(c: int) -> str:
            text = skus[c] if len(skus[c]) <= 28 else skus[c][:27] + "…"
            return f"{text} ({brands[skus[c]]})" if brands.get(skus[c]) else text

        names = [label(c) for c in chosen]
        ax.set_xticks(range(len(chosen) + 1), [*names, "other"], rotation=55, ha="right", fontsize=8)
        ax.set_yticks(range(len(chosen)), names, fontsize=8)
        ax.set_xlabel("predicted SKU")
        ax.set_ylabel("true SKU (least accurate first)")
    ax.set_title(
        "Least accurate SKUs: what they are taken for\n(cell: images; colour: share of the true SKU's images)",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
