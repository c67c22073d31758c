"""``skuvision evaluate``: a model (export dir or checkpoint) on a shard split -> a run-like directory.

Writes what a training run writes about its test split, for any model and any shards:
``metrics.json`` (top-1/top-5, per-brand and per-category accuracy), ``per_sku.csv`` (worst first),
``confusions.csv`` and ``confusions.png``. A checkpoint and its export give the same numbers:
both see the same decoded shard images through the same eval transform.

Shard labels are matched to the model's classes by SKU id, not by index, so a model can be
evaluated on newer shards: images of SKUs the model has never seen are counted and skipped.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from skuvision.data.labels import LabelMap
from skuvision.data.preprocess import check_crop_pct, with_crop_pct
from skuvision.data.transforms import check_eval_crops, eval_transform
from skuvision.export.runtime import load_predictor
from skuvision.export.shard_reader import iter_split, manifest_label_map, split_images
from skuvision.model.views import average_views
from skuvision.report.confusions import confusion_pairs, plot_confusions, write_confusions_csv
from skuvision.report.per_sku import write_per_sku_report


def _class_mapping(shard_label_map: dict, model_labels: LabelMap) -> list[int]:
    """Shard class index -> model class index (-1: a SKU the model does not know)."""
    shard = LabelMap.from_dict(shard_label_map)
    return [model_labels.sku_to_index.get(s, -1) for s in shard.skus]


TOPK = 5  # what metrics.json reports: top-1 and top-5, of SKUs and of brands


class TopK:
    """What evaluate keeps of each image: its top-5 SKUs and brands, never its row of logits.

    Holding the logits of a split is images x classes: at 12,000 SKUs and 12,000 test images,
    576 MB of float32, and the arg-sort and softmax of it several times that (the 12,000-SKU
    rehearsal, BENCHMARKS.md). Reduced batch by batch, memory is images x 5 at any catalogue size.
    """

    def __init__(self, brand_of: list[int] | None) -> None:
        self.brand_of = torch.as_tensor(brand_of) if brand_of is not None else None
        self.top: list[np.ndarray] = []
        self.brand_top: list[np.ndarray] = []

    def add(self, logits: np.ndarray) -> None:
        self.top.append(top_indices(logits, TOPK))
        if self.brand_of is not None:
            probs = torch.from_numpy(logits).double().softmax(dim=1)
            brands = probs.new_zeros(len(probs), int(self.brand_of.max()) + 1).index_add_(1, self.brand_of, probs)
            self.brand_top.append(top_indices(brands.numpy(), TOPK))

    def result(self, num_classes: int) -> tuple[np.ndarray, np.ndarray | None]:
        k = min(TOPK, num_classes)
        top = np.concatenate(self.top) if self.top else np.zeros((0, k), np.int64)
        brand_top = np.concatenate(self.brand_top) if self.brand_top else None
        return top, brand_top


def top_indices(values: np.ndarray, k: int) -> np.ndarray:
    """The indices of each row's ``k`` largest values, largest first; ties go to the lower index
    (as a stable arg-sort of the whole row would), in O(row) per row rather than O(row log row)."""
    k = min(k, values.shape[1])
    if k == values.shape[1]:
        return np.argsort(-values, axis=1, kind="stable")
    kth = -np.partition(-values, k - 1, axis=1)[:, k - 1 : k]  # each row's k-th largest value
    rows = []
    for row, bound in zip(values, kth[:, 0]):
        cand = np.flatnonzero(row >= bound)  # ascending indices: every value above the bound, and its ties
        rows.append(cand[np.argsort(-row[cand], kind="stable")[:k]])
    return np.asarray(rows, np.int64).reshape(len(values), k)


def view_logits(predictor, images: torch.Tensor) -> np.ndarray:
    """Logits of a batch from :func:`eval_transform`: (N, 3, S, S), or (N, views, 3, S, S) scored as the log of
    the views' mean softmax, as a training run's test with ``data.test_crops`` scores them."""
    if images.ndim == 4:
        return predictor.logits(images)
    views = images.shape[1]
    return average_views(torch.from_numpy(predictor.logits(images.flatten(0, 1))), views).numpy()


def score(
    predictor,
    shards_dir: str,
    split: str,
    batch_size: int = 64,
    progress: bool = True,
    crops: int = 1,
    crop_pct: float | None = None,
):
    """(top-5 model class indices (N, 5), brand top-5 (N, 5) or None, true model class indices (N,),
    images of unknown SKUs); logits are reduced batch by batch (:class:`TopK`). ``crops``: views per
    image; ``crop_pct``: their share of the resized shorter side (None: the model's own)."""
    _, count = split_images(shards_dir, split)
    mapping = _class_mapping(manifest_label_map(shards_dir), predictor.labels)
    kept = TopK(predictor.labels.attribute_targets("brand"))
    views = crops > 1 or crop_pct is not None
    transform = eval_transform(with_crop_pct(predictor.spec, crop_pct), crops) if views else predictor.transform
    labels, batch, unknown = [], [], 0

    def flush() -> None:
        if batch:
            kept.add(view_logits(predictor, torch.stack(batch)))
            batch.clear()

    for image, shard_label in tqdm(
        iter_split(shards_dir, split), total=count, unit="img", desc=f"evaluate {split}", disable=not progress
    ):
        target = mapping[shard_label]
        if target < 0:
            unknown += 1
            continue
        batch.append(transform(image))
        labels.append(target)
        if len(batch) >= batch_size:
            flush()
    flush()
    top, brand_top = kept.result(len(predictor.labels))
    return top, brand_top, np.asarray(labels, np.int64), unknown


def _group_accuracy(labels: np.ndarray, pred: np.ndarray, group_of: dict[str, str], skus: list[str]) -> dict:
    """Per brand (or category): images, SKU top-1 among them, and how often the predicted SKU has the right group."""
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for t, p in zip(labels, pred):
        group = group_of.get(skus[t], "")
        if not group:
            continue
        s = stats[group]
        s[0] += 1
        s[1] += int(t == p)
        s[2] += int(group_of.get(skus[p], "") == group)
    return {
        g: {"images": n, "top1": round(c / n, 4), "group_correct": round(gc / n, 4)}
        for g, (n, c, gc) in sorted(stats.items())
    }


def brand_accuracy(brand_top: np.ndarray | None, labels: np.ndarray, model_labels: LabelMap, split: str) -> dict:
    """``{split}/brand_top1`` and ``brand_top5``: each brand scores the summed probability of its SKUs, as
    the training run's test computes them (the GroceryStoreDataset's coarse accuracy); {} without brands."""
    brand_of = model_labels.attribute_targets("brand")
    if brand_of is None or brand_top is None or not len(labels):
        return {}
    target = np.asarray(brand_of)[labels]
    return {
        f"{split}/brand_top1": float(np.mean(brand_top[:, 0] == target)),
        f"{split}/brand_top5": float(np.mean((brand_top == target[:, None]).any(1))),
    }


def compute_metrics(
    top: np.ndarray, brand_top: np.ndarray | None, labels: np.ndarray, model_labels: LabelMap, split: str
) -> dict:
    n = len(labels)
    pred = top[:, 0] if n else np.zeros(0, np.int64)
    skus = model_labels.skus
    return {
        **brand_accuracy(brand_top, labels, model_labels, split),
        f"{split}/top1": float(np.mean(pred == labels)) if n else float("nan"),
        f"{split}/top5": float(np.mean((top == labels[:, None]).any(1))) if n else float("nan"),
        "images": int(n),
        "per_brand": _group_accuracy(labels, pred, model_labels.brands, skus),
        "per_category": _group_accuracy(labels, pred, model_labels.categories, skus),
    }


def default_out_dir() -> Path:
    return Path("logs") / "evaluate" / time.strftime("%Y-%m-%d_%H-%M-%S")


def evaluate(
    model: str,
    shards_dir: str,
    split: str = "test",
    out: str | None = None,
    batch_size: int = 64,
    image_size: int | None = None,
    int8: bool = False,
    progress: bool = True,
    crops: int = 1,
    crop_pct: float | None = None,
) -> tuple[dict, Path]:
    """Score ``model`` on ``split`` and write the report files; returns (metrics, output dir).

    ``crops`` 3 or 5 averages that many views of each image and ``crop_pct`` sets their resize: a training
    run's ``data.test_crops`` and ``data.test_crop_pct``."""
    check_eval_crops(crops, "--crops")
    check_crop_pct(crop_pct, "--crop-pct")
    split_images(shards_dir, split)  # bad shard dir or split: one line before the model loads
    predictor = load_predictor(model, image_size=image_size, int8=int8)
    started = time.perf_counter()
    top, brand_top, labels, unknown = score(predictor, shards_dir, split, batch_size, progress, crops, crop_pct)
    seconds = time.perf_counter() - started
    metrics = compute_metrics(top, brand_top, labels, predictor.labels, split)
    metrics.update(
        model=str(model),
        backend=predictor.backend,
        shards=str(shards_dir),
        split=split,
        crops=crops,
        crop_pct=crop_pct if crop_pct is not None else predictor.spec["crop_pct"],
        skipped_unknown_sku=unknown,
        seconds=round(seconds, 2),
    )
    out_dir = Path(out) if out else default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    num_classes = len(predictor.labels)
    pred = top[:, 0] if len(labels) else np.zeros(0, np.int64)
    totals = np.bincount(labels, minlength=num_classes)
    correct = np.bincount(labels[pred == labels], minlength=num_classes)
    label_map = predictor.labels.to_dict()
    write_per_sku_report(out_dir / "per_sku.csv", torch.from_numpy(correct), torch.from_numpy(totals), label_map)
    pairs = confusion_pairs(labels, pred)
    write_confusions_csv(out_dir / "confusions.csv", pairs, totals.tolist(), label_map)
    plot_confusions(out_dir / "confusions.png", pairs, totals.tolist(), label_map)
    metrics["confused_pairs"] = len(pairs)
    metrics["most_confused"] = [
        f"{predictor.labels.sku(t)} -> {predictor.labels.sku(p)}: {c}" for (t, p), c in Counter(pairs).most_common(3)
    ]
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics, out_dir
