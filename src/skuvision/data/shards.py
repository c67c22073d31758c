"""Build shards from product images: every input file ends up in the shards or in rejects.csv, exactly once.

Workers take one SKU each (``skuvision.data.sku_work``), so memory stays bounded and nothing is
quadratic in the catalogue; the main process writes their samples and finds the same bytes under two
SKUs (a label conflict). The README's "Building shards" and "Reliability" sections say what is
rejected, split and recorded, and why.
"""

from __future__ import annotations

import csv
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from tqdm.auto import tqdm

from skuvision import __version__
from skuvision.data.build_settings import BuildSettings
from skuvision.data.imageio import UnreadableImage, content_hash
from skuvision.data.labels import LabelMap
from skuvision.data.manifest import FORMAT_VERSION, MANIFEST, REJECTS
from skuvision.data.remote import S3ShardUploader, is_s3
from skuvision.data.s3_sources import list_s3_sources
from skuvision.data.shard_dirs import STAGING, PreviousBuild, local_out, previous_state, swap_in
from skuvision.data.shard_writers import SplitWriters
from skuvision.data.sku_work import Sample, SKUResult, init_worker, process_sku_task, read_bytes
from skuvision.data.sources import Conflict, Listing, SourceImage, list_sources
from skuvision.data.split_report import named, split_report
from skuvision.data.splits import SPLITS
from skuvision.errors import DataError, StorageError
from skuvision.files import out_of_room, write_json


def build_shards(
    input_path: str | Path,
    out: str | Path,
    settings: BuildSettings | None = None,
    label_map_path: str | None = None,
    progress: bool = True,
) -> dict:
    """Build ``out/{train,val,test}`` litdata shards, ``out/manifest.json`` and ``out/rejects.csv``.

    ``out`` may be ``s3://bucket/prefix``: the build then runs in a local scratch directory and
    every chunk is uploaded (and deleted locally) as soon as it is complete; the manifest last.
    """
    settings = settings or BuildSettings()
    settings.validate()
    listing = read_listing(input_path)
    previous = previous_for(label_map_path, out)  # before the output is touched: it may live there
    if not is_s3(out):
        return into_local_out(
            Path(out), lambda staging: _build(listing, input_path, staging, settings, previous, progress)
        )

    manifest = into_s3_out(
        str(out), lambda local, upload: _build(listing, input_path, local, settings, previous, progress, upload)
    )
    manifest["output"] = str(out)
    return manifest


def into_s3_out(out: str, write: Callable[[Path, Callable], dict]) -> dict:
    """Run ``write(scratch, on_chunk)`` in a local scratch folder, uploading each chunk as it closes; manifest last."""
    uploader = S3ShardUploader(out)
    uploader.prepare()  # bucket, credentials and prefix checked before any image is read
    with tempfile.TemporaryDirectory(prefix="skuvision-shards-") as scratch:
        local = Path(scratch) / "build"
        local.mkdir()
        try:
            manifest = write(local, uploader.submit)
            uploader.upload_tree(local)
            uploader.finish(local / MANIFEST)
        finally:
            uploader.close()  # no upload outlives the scratch directory
    return manifest


def read_listing(input_path: str | Path) -> Listing:
    """The input's images and skipped rows, refused when it could never give a training split."""
    listing = list_s3_sources(str(input_path)) if is_s3(input_path) else list_sources(input_path)
    if all(s.split for s in listing.images) and not any(s.split == "train" for s in listing.images):
        raise DataError(
            f"--input {input_path}: every row has a split and none is train; "
            "mark some rows split=train or leave split empty to have them split by hash"
        )
    return listing


def previous_for(label_map_path: str | None, out: str | Path) -> PreviousBuild:
    """The earlier build a new one continues; a rebuild over its own manifest is not a delta of itself."""
    previous = previous_state(label_map_path)
    if previous.base and previous.base["path"] == (str(out).rstrip("/") if is_s3(out) else str(Path(out).resolve())):
        previous.base = None
    return previous


def into_local_out(out: Path, write: Callable[[Path], dict]) -> dict:
    """Run ``write`` into a staging folder inside ``out`` and swap the result in only when it succeeded."""
    final = local_out(out)
    staging = Path(tempfile.mkdtemp(prefix=STAGING, dir=final))
    try:
        manifest = write(staging)
        swap_in(staging, final)
    except Exception as exc:
        full = out_of_room(exc)
        if full is None:
            raise
        raise StorageError(
            f"--out {final}: shards not written ({full.strerror}); any earlier build there is untouched; "
            "free space (shards take about a tenth of the originals' size) or choose another --out"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _same_bytes(path: str, content_hash_hex: str) -> bool:
    try:
        return content_hash(read_bytes(path)) == content_hash_hex
    except UnreadableImage:  # gone since: not provably the same
        return False


@dataclass
class BuildState:
    """What the build has gathered so far, SKU by SKU in SKU-id order: the manifest's content."""

    sources: list[SourceImage]
    label_map: LabelMap
    pinned: dict[str, str]
    cuts: dict[str, dict]
    rejects: list[tuple[str, str]]
    conflicts: list[Conflict]
    first_copy: dict[int, int] = field(default_factory=dict)  # 64-bit content-hash prefix -> listing index
    empty: list[str] = field(default_factory=list)  # SKUs whose every image was rejected
    per_sku: dict[str, dict[str, int]] = field(default_factory=dict)  # SKU -> split -> images
    free: dict[str, Counter] = field(default_factory=dict)  # SKU -> split -> images the build split itself
    groups: dict[str, list[list[str]]] = field(default_factory=dict)  # SKU -> near-duplicate groups
    lowered: dict[str, int] = field(default_factory=dict)  # SKU -> dedup distance used, where lowered
    straddling: list[list[str]] = field(default_factory=list)  # groups whose CSV splits differ
    # (listing index of an earlier copy, content hash) -> whether its bytes are these: the build re-reads the file
    same_bytes: Callable[[int, str], bool] | None = None

    @classmethod
    def start(
        cls, listing: Listing, previous: PreviousBuild, same_bytes: Callable[[int, str], bool] | None = None
    ) -> BuildState:
        """An empty state over ``listing``, keeping the earlier build's label map, pins and cuts."""
        return cls(
            listing.images,
            previous.label_map,
            previous.pinned,
            previous.cuts,
            list(listing.skipped),
            list(listing.conflicts),
            same_bytes=same_bytes,
        )

    def drop_cross_sku_copies(self, result: SKUResult, offset: int) -> list[Sample]:
        """The SKU's samples whose bytes no earlier SKU holds; the others become label-conflict rejects."""
        kept = []
        for sample in result.samples:
            index = offset + sample.position
            other = self.first_copy.setdefault(int(sample.content_hash[:16], 16), index)
            if other != index and self._same_bytes(other, sample.content_hash):
                src, first = self.sources[index], self.sources[other]  # never one SKU: process_sku drops those
                reason = f"label conflict: same bytes as {first.path} (SKU {first.sku_id!r}, kept there)"
                result.rejects.append((src.path, reason))
                self.conflicts.append(Conflict(src.path, src.sku_id, first.path, first.sku_id, "same bytes"))
            else:
                kept.append(sample)
        return kept

    def _same_bytes(self, other: int, digest: str) -> bool:
        if self.same_bytes is not None:
            return self.same_bytes(other, digest)
        return _same_bytes(self.sources[other].path, digest)

    def record(self, result: SKUResult, kept: list[Sample], first: SourceImage, offset: int, asked_distance: int):
        """Give the SKU its class (when it kept an image) and note its counts, groups, pins and cuts."""
        sku = result.sku_id
        if kept:
            self.label_map.extend([sku])  # SKU-id order; SKUs of an earlier build keep their index
        if sku in self.label_map:
            self.label_map.set_attributes(sku, first.brand, first.category)
        if kept:
            self.per_sku[sku] = dict(Counter(s.split for s in kept))
            self.free[sku] = Counter(s.split for s in kept if not self.sources[offset + s.position].split)
            if result.dedup_distance < asked_distance:
                self.lowered[sku] = result.dedup_distance
        else:
            self.empty.append(sku)
        self.straddling += result.straddling
        self.rejects.extend(result.rejects)
        self.pinned.update(result.new_pins)
        if result.cuts:
            self.cuts[sku] = result.cuts
        if result.groups:
            self.groups[sku] = result.groups


@contextmanager
def sku_results(per_sku_sources: list[list[SourceImage]], settings: BuildSettings, previous: PreviousBuild):
    """Each SKU's result, in listing order: from a process pool when ``workers`` > 1."""
    tasks = ((imgs, settings, previous.cuts.get(imgs[0].sku_id)) for imgs in per_sku_sources)
    if settings.workers <= 1:
        init_worker(dict(previous.pinned))
        yield map(process_sku_task, tasks)
        return
    pool = ProcessPoolExecutor(settings.workers, initializer=init_worker, initargs=(dict(previous.pinned),))
    try:
        yield pool.map(process_sku_task, tasks, chunksize=1)
    finally:
        pool.shutdown()


def by_sku(sources: list[SourceImage]) -> Iterator[tuple[list[SourceImage], int]]:
    """(one SKU's images, the listing index of its first) for each SKU, in listing order."""
    offset = 0
    for _, group in groupby(sources, key=lambda s: s.sku_id):
        images = list(group)
        yield images, offset
        offset += len(images)


def _build(
    listing: Listing,
    input_path,
    out: Path,
    settings: BuildSettings,
    previous: PreviousBuild,
    progress: bool,
    on_chunk=None,
) -> dict:
    state = BuildState.start(listing, previous)
    skus = list(by_sku(listing.images))
    writers = SplitWriters(out, settings.chunk_bytes, on_chunk)
    start = time.perf_counter()
    with tqdm(total=len(listing.images), desc="shards build", unit="img", disable=not progress) as bar:
        with sku_results([images for images, _ in skus], settings, previous) as results:
            for (images, offset), result in zip(skus, results):
                kept = state.drop_cross_sku_copies(result, offset)
                state.record(result, kept, images[0], offset, settings.dedup_distance)
                for sample in kept:
                    label = state.label_map.index(result.sku_id)
                    writers.add(sample.split, {"image": sample.jpeg, "label": label, "key": sample.content_hash})
                bar.update(len(result.samples) + len(result.rejects))
    writers.close()
    return finish_build(state, writers, out, input_path, settings, previous, time.perf_counter() - start)


def finish_build(
    state: BuildState,
    writers: SplitWriters,
    out: Path,
    input_path,
    settings: BuildSettings,
    previous,
    elapsed: float,
    extra: dict | None = None,
) -> dict:
    """Check that training images remain, warn, and write rejects.csv and the manifest (last)."""
    if not writers.counts["train"]:
        raise DataError(
            f"--input {input_path}: the build left no training images ({_counts(writers.counts)}); "
            "lower --val/--test, add images, or give rows split=train; no manifest was written"
        )
    fractions, warnings = split_report(state.per_sku, state.free, settings.val, settings.test, state.straddling)
    _print_warnings(warnings + _notes(state))
    _write_rejects(out / REJECTS, state.rejects)
    manifest = _manifest(state, writers, input_path, settings, fractions, warnings, elapsed)
    if previous.base:  # a delta: names the shard set it extends (skuvision.onboarding replays from its train split)
        manifest["base"] = previous.base
    manifest.update(extra or {})
    write_json(out / MANIFEST, manifest, indent=1)  # a crash never leaves a half-written manifest
    return manifest


def _notes(state: BuildState) -> list[str]:
    """Warnings not about splits: printed, and recorded in their own manifest fields."""
    notes = []
    if state.empty:
        notes.append(
            f"{len(state.empty)} SKU(s) have no valid image (all rejected, see rejects.csv), so no samples and, "
            f"unless an earlier build's --label-map holds them, no class: {named(state.empty)}"
        )
    if state.conflicts:
        c = state.conflicts[0]
        notes.append(
            f"{len(state.conflicts)} label conflict(s): one image under two SKUs, kept under the first and the "
            f"later copy rejected (rejects.csv, manifest label_conflicts); first: {c.path} as {c.sku_id!r} "
            f"vs {c.kept_path} as {c.kept_sku!r}"
        )
    return notes


def _print_warnings(lines: list[str]) -> None:
    for line in lines:
        print(f"skuvision: warning: {line}", file=sys.stderr)


def _write_rejects(path: Path, rejects: list[tuple[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "reason"])
        w.writerows(rejects)


def _manifest(
    state: BuildState, writers: SplitWriters, input_path, settings: BuildSettings, fractions, warnings, elapsed
) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "created_by": f"skuvision {__version__}",
        "input": str(input_path),
        "settings": {k: v for k, v in vars(settings).items() if k != "workers"},
        "num_classes": len(state.label_map),
        "label_map": state.label_map.to_dict(),
        "splits": {s: {"dir": s, "count": writers.counts[s]} for s in SPLITS},
        "chunk_sha256": writers.sha256,  # split -> chunk file -> sha256: `shards verify` finds flipped bits
        "per_sku": state.per_sku,
        "rejects": len(state.rejects),
        "label_conflicts": [c.to_dict() for c in state.conflicts],
        "empty_skus": state.empty,  # SKUs listed in the input whose every image was rejected
        "split_fractions": fractions,
        "split_warnings": warnings,
        "near_duplicate_groups": state.groups,
        "dedup_distance_lowered": state.lowered,  # SKU -> bits used, where its views look alike
        "pinned_splits": state.pinned,
        "split_cuts": state.cuts,
        "build_seconds": round(elapsed, 2),
    }


def _counts(counts: Counter) -> str:
    return ", ".join(f"{s} {counts[s]}" for s in SPLITS)
