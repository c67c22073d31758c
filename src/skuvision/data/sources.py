"""Where input images come from: an ImageFolder tree or a CSV listing.

An ImageFolder is ``DIR/<sku_id>/<file>``. A CSV has columns ``path,sku_id`` and
optionally ``brand,category,split``; relative paths resolve against the CSV's folder.
``split`` (train|val|test) is honoured as given, because public data sets ship fixed test
sets and comparisons need them; a row with an empty ``split`` is split by the build.
A directory holding ``catalogue.csv`` (what ``skuvision synth`` writes) is read
through that CSV so brand/category come along.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from skuvision.errors import DataError

SPLIT_VALUES = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class SourceImage:
    path: str
    sku_id: str
    brand: str = ""
    category: str = ""
    split: str = ""  # given by the user (CSV column), else "" = the build decides


def read_csv_listing(csv_path: Path) -> list[SourceImage]:
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "sku_id"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(
                f"{csv_path}: missing column(s) {', '.join(sorted(missing))}; "
                "the CSV needs a header with path,sku_id[,brand,category,split]"
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row["path"] or not row["sku_id"]:
                raise DataError(f"{csv_path}:{line}: empty path or sku_id; fix or remove that row")
            split = (row.get("split") or "").strip()
            if split and split.lower() not in SPLIT_VALUES:
                raise DataError(
                    f"{csv_path}:{line}: split {split!r} is not one of {', '.join(SPLIT_VALUES)}; "
                    "fix it, or leave it empty to have the build split that image"
                )
            path = Path(row["path"])
            if not path.is_absolute():
                path = csv_path.parent / path
            rows.append(
                SourceImage(
                    str(path),
                    row["sku_id"].strip(),
                    (row.get("brand") or "").strip(),
                    (row.get("category") or "").strip(),
                    split.lower(),
                )
            )
    return rows


def read_image_folder(root: Path) -> list[SourceImage]:
    rows = []
    for sku_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(sku_dir.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                rows.append(SourceImage(str(f), sku_dir.name))
    return rows


def list_sources(input_path: str | Path) -> list[SourceImage]:
    """All input images, sorted by (sku_id, path) so builds are deterministic."""
    path = Path(input_path)
    if not path.exists():
        raise DataError(f"--input {path}: no such file or directory; pass an ImageFolder tree or a CSV")
    if path.is_file():
        rows = read_csv_listing(path)
    elif (path / "catalogue.csv").is_file():
        rows = read_csv_listing(path / "catalogue.csv")
    else:
        rows = read_image_folder(path)
    if not rows:
        raise DataError(f"--input {path}: no images found; expected DIR/<sku_id>/<image>.jpg or a CSV with path,sku_id")
    return sorted(rows, key=lambda r: (r.sku_id, r.path))
