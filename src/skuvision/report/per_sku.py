"""Per-SKU test accuracy, worst first: the SKUs to re-photograph or merge (training runs and `skuvision evaluate`)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from skuvision.data.labels import LabelMap


def write_per_sku_report(path: Path, correct: torch.Tensor, total: torch.Tensor, label_map: dict | None) -> Path:
    """Per-SKU test accuracy, worst first: the SKUs to re-photograph or merge."""
    lm = LabelMap.from_dict(label_map) if label_map else None
    skus = lm.skus if lm else [str(i) for i in range(len(total))]
    rows = []
    for i in range(len(total)):
        n = int(total[i])
        if n:
            sku = skus[i]
            rows.append(
                (
                    sku,
                    i,
                    n,
                    int(correct[i]),
                    float(correct[i]) / n,
                    lm.brands.get(sku, "") if lm else "",
                    lm.categories.get(sku, "") if lm else "",
                )
            )
    rows.sort(key=lambda r: (r[4], -r[2], r[0]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["sku_id", "class_index", "test_images", "correct", "accuracy", "brand", "category"])
        w.writerows([(r[0], r[1], r[2], r[3], f"{r[4]:.4f}", r[5], r[6]) for r in rows])
    return path
