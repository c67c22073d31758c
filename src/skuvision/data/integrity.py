"""Shards damaged after the build, found at train time: one line naming the file, not a traceback.

Two checks, both where they cost nothing noticeable:

- before the first step (:func:`check_chunks`, local shards): every chunk file listed in a
  split's ``index.json`` exists with the size the build wrote. A truncated chunk, a missing
  one, or a chunk copied in from another build (a different size) stops the run with the
  file and the remedy, before any worker reads garbage offsets.
- per sample, in the loader worker (:func:`read_sample`): a sample whose chunk does not read,
  whose label is outside the label map, or whose image does not decode (a flipped bit that
  kept the chunk's size) becomes a *bad sample* marker instead of an exception in a worker.
  :func:`collate_skipping_bad` drops markers from the batch and hands them to the training
  process, where :class:`BadSamples` counts distinct bad samples and stops the run, with the
  chunk and sample named, once there are more than ``data.max_bad_samples`` (default 0: the
  first one stops it). The count lands in ``metrics.json`` as ``data/bad_samples``: a run never
  trains on less without saying so. Under DDP each rank counts what it read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skuvision.errors import DataError

BAD = "__bad_sample__"
REMEDY = "run `skuvision shards verify {root}` and rebuild the shards (`skuvision shards build`)"


def check_chunks(root: str, split_dir: str) -> None:
    """Every chunk of ``split_dir`` present with the size its ``index.json`` records (local dirs only)."""
    directory = Path(split_dir)
    index = directory / "index.json"
    if not directory.is_dir():
        return  # remote (s3://): litdata fetches and checks chunks itself
    if not index.is_file():
        raise DataError(f"{index}: missing; the shards are incomplete; " + REMEDY.format(root=root))
    try:
        chunks = json.loads(index.read_text())["chunks"]
    except (ValueError, KeyError) as exc:
        raise DataError(f"{index}: not a litdata index ({exc}); " + REMEDY.format(root=root)) from None
    for chunk in chunks:
        path = directory / chunk["filename"]
        if not path.is_file():
            raise DataError(f"{path}: chunk missing; " + REMEDY.format(root=root))
        size, expected = path.stat().st_size, int(chunk["chunk_bytes"])
        if size != expected:
            raise DataError(
                f"{path}: {size} bytes, the build wrote {expected} (truncated, damaged or from "
                "another build); " + REMEDY.format(root=root)
            )


def chunk_names(split_dir: str) -> list[str]:
    try:
        return [c["filename"] for c in json.loads((Path(split_dir) / "index.json").read_text())["chunks"]]
    except (OSError, ValueError, KeyError):
        return []


def read_sample(
    read: Callable[[], dict],
    index: Any,
    split_dir: str,
    names: list[str],
    num_classes: int,
    decode: Callable[[bytes], Any],
) -> tuple[dict | None, Any]:
    """``(sample, decoded image)``, or ``({BAD: where, "reason": why}, None)`` for a sample that cannot be used."""
    position = getattr(index, "index", index)
    chunk = getattr(index, "chunk_index", None)
    where = f"{split_dir}/{names[chunk]}" if chunk is not None and chunk < len(names) else split_dir
    where = f"{where} sample {position}"
    try:
        sample = read()
    except Exception as exc:  # noqa: BLE001 - a chunk that does not parse: garbage offsets, short reads
        return {BAD: where, "reason": f"chunk does not read ({type(exc).__name__}: {exc})"}, None
    label = sample.get("label")
    if not isinstance(label, int) or not 0 <= label < num_classes:
        return {BAD: where, "reason": f"label {label!r} outside 0..{num_classes - 1}"}, None
    try:
        return sample, decode(sample["image"])
    except Exception as exc:  # noqa: BLE001 - torchvision raises RuntimeError, PIL OSError/ValueError
        return {BAD: where, "reason": f"image does not decode ({exc})"}, None


def collate_skipping_bad(collate: Callable[[list], Any]) -> Callable[[list], Any]:
    def collate_fn(samples: list) -> Any:
        good = [s for s in samples if BAD not in s]
        bad = [(s[BAD], s["reason"]) for s in samples if BAD in s]
        if not good:  # nothing left to make a batch of: report what was read, stop in the main process
            return {BAD: bad}
        batch = collate(good)
        if bad:
            batch[BAD] = bad
        return batch

    return collate_fn


class BadSamples:
    """Distinct bad samples seen by this process; more than ``limit`` stops the run."""

    def __init__(self, limit: int, root: str) -> None:
        self.limit, self.root = limit, root
        self.seen: dict[str, str] = {}

    def take(self, batch: Any) -> Any:
        if not isinstance(batch, dict) or BAD not in batch:
            return batch
        for where, reason in batch.pop(BAD):
            self.seen.setdefault(where, reason)
        if len(self.seen) > self.limit:
            where, reason = next(reversed(self.seen.items()))
            raise DataError(
                f"{where}: {reason}; {len(self.seen)} bad sample(s), more than data.max_bad_samples="
                f"{self.limit}; " + REMEDY.format(root=self.root) + ", or raise data.max_bad_samples to skip them"
            )
        if "image" not in batch:
            raise DataError(f"a whole batch of bad samples ({len(self.seen)} so far); " + REMEDY.format(root=self.root))
        return batch
