"""Where a shard build reads its past and writes its result.

``previous_state``: the label map, pins and split cuts of an earlier build (``--label-map``), which
keep class indices and splits stable. ``local_out``/``swap_in``: a local build writes into a
staging folder inside ``--out`` and replaces the earlier build only once it has succeeded, so a
build that fails (bad input, no training images, a crash) never costs the build already there.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from skuvision.data.labels import LabelMap
from skuvision.data.lineage import base_record
from skuvision.data.manifest import MANIFEST, REJECTS
from skuvision.data.remote import PARTITIONS, is_s3, read_json
from skuvision.data.splits import SPLITS
from skuvision.errors import DataError


@dataclass
class PreviousBuild:
    """What an earlier build hands on: class indices, pinned splits and split cuts keep a rebuild stable."""

    label_map: LabelMap = field(default_factory=LabelMap)
    pinned: dict[str, str] = field(default_factory=dict)  # content hash -> split
    cuts: dict[str, dict] = field(default_factory=dict)  # SKU -> its split cuts (hash units)
    base: dict | None = None  # the shard set a delta extends (path + content hash)


def previous_state(label_map_path: str | None) -> PreviousBuild:
    """The label map, pinned splits, split cuts and base record of an earlier build (its manifest.json, local or s3://).

    The base record (path + content hash, only when ``label_map_path`` is a shard manifest) lets a
    delta shard set find its base's train split for replay and prove it is the one it was built on.
    """
    if not label_map_path:
        return PreviousBuild()
    if is_s3(label_map_path):
        data = read_json(label_map_path)
        label_map = LabelMap.from_dict(data.get("label_map", data))
    else:
        label_map = LabelMap.load(label_map_path)
        data = json.loads(Path(label_map_path).read_text())
    pins = dict(data.get("pinned_splits", {})) if isinstance(data, dict) else {}
    cuts = dict(data.get("split_cuts", {})) if isinstance(data, dict) else {}
    return PreviousBuild(label_map, pins, cuts, base_record(label_map_path, data))


STAGING = ".building-"


def local_out(out: Path) -> Path:
    """``out``, checked: new, empty, or an earlier build of ours (which stays until the new one is done)."""
    if out.exists():
        stale = [p for p in out.iterdir() if p.name.startswith(STAGING)]  # left by a build that was killed
        ours = len(stale) + (out / PARTITIONS).is_dir()  # a partitioned build's parts, merged into out
        if ours < len(list(out.iterdir())) and not (out / MANIFEST).exists():
            raise DataError(
                f"--out {out}: exists, is not empty and holds no {MANIFEST}; choose an empty or new directory"
            )
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def swap_in(staging: Path, out: Path) -> None:
    """Replace an earlier build's splits with the new ones; the manifest goes last."""
    for split in SPLITS:  # a rebuild replaces an earlier build of ours, nothing else
        shutil.rmtree(out / split, ignore_errors=True)
        if (staging / split).exists():
            os.replace(staging / split, out / split)
    os.replace(staging / REJECTS, out / REJECTS)
    os.replace(staging / MANIFEST, out / MANIFEST)
