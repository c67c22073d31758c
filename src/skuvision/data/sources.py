"""Where input images come from: an ImageFolder tree or a CSV listing.

An ImageFolder is ``DIR/<sku_id>/<file>``. A CSV has columns ``path,sku_id`` and
optionally ``brand,category,split``; relative paths resolve against the CSV's folder.
``split`` (train|val|test) is honoured as given, because public data sets ship fixed test
sets and comparisons need them; a row with an empty ``split`` is split by the build.
A directory holding ``catalogue.csv`` (what ``skuvision synth`` writes) is read
through that CSV so brand/category come along.

SKU ids are exact strings after stripping surrounding whitespace: spaces inside, slashes and any
unicode are kept as they are (skuvision never makes a file name of a SKU id); a CSV is read as
UTF-8 (a byte-order mark, as Excel writes, is fine). A path listed twice is read once: the later
row is a counted skip in rejects.csv naming the first, and where the two rows give different SKUs
it is a label conflict (kept under the first, reported in the manifest's ``label_conflicts``).
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from skuvision.errors import DataError

SPLIT_VALUES = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True, slots=True)
class SourceImage:
    """One input image. Slotted: a catalogue-scale listing holds 4 M of them in every build and merge."""

    path: str
    sku_id: str
    brand: str = ""
    category: str = ""
    split: str = ""  # given by the user (CSV column), else "" = the build decides


@dataclass(frozen=True)
class Conflict:
    """One file given two SKUs: ``path`` under ``sku_id`` was dropped, ``kept_path`` stays ``kept_sku``."""

    path: str
    sku_id: str
    kept_path: str
    kept_sku: str
    why: str  # "same path" | "same bytes"

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class Listing:
    """The input images, plus rows skipped before any image is read: (path, reason) for rejects.csv."""

    images: list[SourceImage]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)


def read_csv_listing(csv_path: Path) -> Listing:
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        return read_csv_rows(fh, csv_path, _local_path(csv_path))


def _local_path(csv_path: Path):
    def resolve(raw: str) -> tuple[str, str]:
        path = Path(raw)
        if not path.is_absolute():
            path = csv_path.parent / path
        return str(path), os.path.normpath(os.path.abspath(path))

    return resolve


def read_csv_rows(fh, csv_path, resolve) -> Listing:
    """The listing of an open CSV; ``resolve(path column) -> (path, key)``: where the image is, and the
    normalised key that finds a path listed twice."""
    listing = Listing([])
    first: dict[str, tuple[int, str]] = {}  # normalised path -> (line, sku_id) of its first row
    reader = csv.DictReader(fh)
    missing = {"path", "sku_id"} - set(reader.fieldnames or [])
    if missing:
        raise DataError(
            f"{csv_path}: missing column(s) {', '.join(sorted(missing))}; "
            "the CSV needs a header with path,sku_id[,brand,category,split]"
        )
    for line, row in enumerate(reader, start=2):
        sku_id = (row["sku_id"] or "").strip()
        if not (row["path"] or "").strip() or not sku_id:
            raise DataError(f"{csv_path}:{line}: empty path or sku_id; fix or remove that row")
        split = (row.get("split") or "").strip()
        if split and split.lower() not in SPLIT_VALUES:
            raise DataError(
                f"{csv_path}:{line}: split {split!r} is not one of {', '.join(SPLIT_VALUES)}; "
                "fix it, or leave it empty to have the build split that image"
            )
        path, key = resolve(row["path"])
        if key in first:
            first_line, first_sku = first[key]
            if first_sku == sku_id:
                listing.skipped.append((str(path), f"duplicate row: line {line} lists the path of line {first_line}"))
            else:
                listing.skipped.append(
                    (
                        str(path),
                        f"label conflict: line {line} lists it as SKU {sku_id!r}, line {first_line} as "
                        f"{first_sku!r} (kept there)",
                    )
                )
                listing.conflicts.append(Conflict(str(path), sku_id, str(path), first_sku, "same path"))
            continue
        first[key] = (line, sku_id)
        listing.images.append(
            SourceImage(
                str(path),
                # interned: one string object per SKU id, brand, category, shared by the SKU's ~300 rows
                sys.intern(sku_id),
                sys.intern((row.get("brand") or "").strip()),
                sys.intern((row.get("category") or "").strip()),
                sys.intern(split.lower()),
            )
        )
    return listing


def read_image_folder(root: Path) -> list[SourceImage]:
    rows = []
    for sku_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(sku_dir.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                rows.append(SourceImage(str(f), sku_dir.name))
    return rows


def has_images(folder: Path, look: int | None = None) -> bool:
    """Whether ``folder`` directly holds image files; reads at most ``look`` entries (None: all)."""
    try:
        with os.scandir(folder) as entries:
            return any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES for e in islice(entries, look))
    except OSError:
        return False


def list_sources(input_path: str | Path) -> Listing:
    """All input images, sorted by (sku_id, path) so builds are deterministic, and the rows skipped."""
    path = Path(input_path)
    if not path.exists():
        raise DataError(f"--input {path}: no such file or directory; pass an ImageFolder tree or a CSV")
    if path.is_file():
        listing = read_csv_listing(path)
    elif (path / "catalogue.csv").is_file():
        listing = read_csv_listing(path / "catalogue.csv")
    else:
        listing = Listing(read_image_folder(path))
    if not listing.images:
        if path.is_dir() and has_images(path):
            raise DataError(
                f"--input {path}: images sit directly in it; put each SKU's images in {path}/<sku_id>/ "
                "or list them in a CSV with path,sku_id"
            )
        listings = sorted(path.glob("*.csv")) if path.is_dir() else []
        hint = f" (it holds {listings[0].name}: pass --input {listings[0]})" if len(listings) == 1 else ""
        raise DataError(
            f"--input {path}: no images found; expected DIR/<sku_id>/<image>.jpg or a CSV with path,sku_id{hint}"
        )
    listing.images.sort(key=lambda r: (r.sku_id, r.path))
    return listing


def holds_raw_images(root: Path, look: int = 50) -> bool:
    """True when ``root`` looks like a build's input (images, DIR/<sku_id>/<image>, a CSV listing);
    reads at most ``look`` entries per folder, so a huge tree costs nothing."""
    if root.is_file():
        return root.suffix.lower() == ".csv"
    if not root.is_dir():
        return False
    if has_images(root, look) or (root / "catalogue.csv").is_file():
        return True
    with os.scandir(root) as entries:
        return any(e.is_dir() and has_images(Path(e.path), look) for e in islice(entries, look))
