"""``skuvision predict``: top-k SKUs for image files, directories or a CSV listing.

Output per image (timm's inference.py top-k schema, with the SKU's brand): the path, then for
k = 1..topk the SKU id, its brand and its probability; an ``error`` column names why an image could
not be predicted (unreadable, zero bytes, not an image, truncated). One bad photo never stops a
folder of thousands: it gets its error row and the rest go on; the exit status says whether any
failed (0 all predicted, 1 some not, 2 bad arguments).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from skuvision.data.imageio import UnreadableImage
from skuvision.data.sources import IMAGE_SUFFIXES  # what the shard builder reads, predict reads
from skuvision.errors import UserError
from skuvision.export.runtime import load_predictor, read_image

PROGRESS_FROM = 100  # images; fewer finish before a bar would tell anything


def _csv_listing(path: Path) -> list[Path]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in reader.fieldnames or []]
        if "path" not in fields:
            raise UserError(
                f"{path}: no 'path' column (columns: {', '.join(fields) or 'none'}); "
                "a CSV input needs a header with path"
            )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    return [p if p.is_absolute() else path.parent / p for p in (Path(r["path"]) for r in rows if r.get("path"))]


def collect_inputs(inputs: Iterable[str]) -> list[Path]:
    """Image paths in the order given: files as they are, directories recursively (image suffixes,
    sorted), ``.csv`` files as listings whose ``path`` column is relative to the CSV's folder."""
    paths: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"INPUT {p}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this directory")
            paths += found
        elif p.is_file() and p.suffix.lower() == ".csv":
            paths += _csv_listing(p)
        elif p.is_file():
            paths.append(p)
        else:
            raise UserError(f"INPUT {p}: no such file or directory; pass image files, directories or a CSV with path")
    if not paths:
        raise UserError("INPUT: nothing to predict; pass image files, directories or a CSV with a path column")
    return paths


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def predict_paths(
    predictor, paths: list[Path], topk: int = 5, batch_size: int = 32, progress: bool = True
) -> list[dict]:
    """One row per path, in order: ``{"path", "predictions": [{"sku_id", "brand", "probability"}], "error"}``."""
    skus, brands = predictor.labels.skus, predictor.labels.brands
    rows: list[dict] = [{"path": str(p), "predictions": [], "error": ""} for p in paths]
    pending: list[tuple[int, object]] = []

    def flush() -> None:
        if not pending:
            return
        probs = softmax(predictor.logits(torch.stack([t for _, t in pending])).astype(np.float64))
        top = np.argsort(-probs, axis=1, kind="stable")[:, :topk]
        for (row_index, _), classes, p in zip(pending, top, probs):
            rows[row_index]["predictions"] = [
                {"sku_id": skus[c], "brand": brands.get(skus[c], ""), "probability": float(p[c])} for c in classes
            ]
        pending.clear()

    bar = tqdm(
        total=len(paths),
        unit="img",
        desc="predict",
        file=sys.stderr,
        disable=not progress or len(paths) < PROGRESS_FROM,
    )
    for i, path in enumerate(paths):
        try:
            pending.append((i, predictor.transform(read_image(path))))
        except UnreadableImage as exc:
            rows[i]["error"] = f"{path}: {exc}"
        if len(pending) >= batch_size:
            flush()
        bar.update(1)
    flush()
    bar.close()
    return rows


def render(rows: list[dict], topk: int, fmt: str) -> str:
    if fmt == "json":
        return json.dumps([{**r, "error": r["error"] or None} for r in rows], indent=1) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", *[f"{c}_{k}" for k in range(1, topk + 1) for c in ("sku", "brand", "prob")], "error"])
    for r in rows:
        cells = [v for p in r["predictions"] for v in (p["sku_id"], p["brand"], f"{p['probability']:.6f}")]
        writer.writerow([r["path"], *cells, *[""] * (3 * topk - len(cells)), r["error"]])
    return buf.getvalue()


def run_predict(
    model: str,
    inputs: list[str],
    topk: int = 5,
    fmt: str = "csv",
    out: str | None = None,
    batch_size: int = 32,
    image_size: int | None = None,
    int8: bool = False,
    progress: bool = True,
) -> tuple[int, int]:
    """Predict, write to ``out`` (or stdout); returns (images predicted, images failed)."""
    if topk < 1:
        raise UserError(f"--topk {topk}: must be at least 1")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    paths = collect_inputs(inputs)
    predictor = load_predictor(model, image_size=image_size, int8=int8)
    topk = min(topk, len(predictor.labels))
    rows = predict_paths(predictor, paths, topk, batch_size, progress)
    text = render(rows, topk, fmt)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    failed = sum(1 for r in rows if r["error"])
    return len(rows) - failed, failed
