"""Build and verify litdata shards from product images.

One pass over the originals: each worker takes one SKU, decodes and checks every
image, downscales and re-encodes it, groups near-duplicate frames and assigns
splits; the main process appends the results to one litdata writer per split.
A local build writes into a staging folder inside ``--out`` and swaps it in only when it
succeeded, so a failed build never costs the previous one.
Work is per SKU so memory stays bounded (one SKU's ~300 small JPEGs in flight
per worker) and nothing is quadratic in the catalogue size.

Every input file ends up either in the shards or in rejects.csv (path, reason), exactly once;
what is rejected and why is listed in ``skuvision.data.imageio`` and the README's Reliability
section. Duplicates: a file whose bytes equal an earlier file of the same SKU is a counted skip
("duplicate"); the same bytes under two different SKUs is a *label conflict*: the copy under the
first SKU (in SKU-id order) is kept, the later one rejected naming the other path and SKU, every
conflict is listed in the manifest's ``label_conflicts`` and one warning line gives the count.
Cross-SKU copies are found in the main process, which sees every SKU's content hashes as they
stream in: one dict entry per image (a 64-bit hash prefix -> the image's index in the listing),
a match confirmed by re-hashing the earlier file.
A SKU whose images were all rejected gets no class: it is left out of the label map (a SKU
that an earlier build's ``--label-map`` already holds keeps its index, with no samples), named
in the manifest's ``empty_skus`` and in one warning line.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from litdata import StreamingDataset
from litdata.streaming.writer import BinaryWriter
from tqdm.auto import tqdm

from skuvision import __version__
from skuvision.data.imageio import UnreadableImage, content_hash, decode_to_tensor, prepare_image
from skuvision.data.labels import LabelMap
from skuvision.data.manifest import FORMAT_VERSION, MANIFEST, REJECTS, read_manifest
from skuvision.data.remote import S3ShardUploader, is_s3
from skuvision.data.shard_dirs import STAGING, local_out, previous_state, swap_in
from skuvision.data.sources import Conflict, Listing, SourceImage, list_sources
from skuvision.data.split_report import named, split_report
from skuvision.data.splits import SPLITS, assign_splits, near_duplicate_groups
from skuvision.errors import DataError, StorageError
from skuvision.files import out_of_room, sha256, write_json


@dataclass
class BuildSettings:
    size: int = 320
    quality: int = 90
    val: float = 0.1
    test: float = 0.1
    dedup_distance: int = 8  # phash bits; -1 disables near-duplicate grouping (see scripts/benchmark_dedup.py)
    chunk_bytes: str = "64MB"
    workers: int = 1

    def validate(self) -> None:
        """Raises DataError naming the bad option."""
        if self.size < 16:
            raise DataError(f"--size {self.size}: must be at least 16 pixels")
        if not 1 <= self.quality <= 100:
            raise DataError(f"--quality {self.quality}: must be in 1..100")
        for name, frac in (("--val", self.val), ("--test", self.test)):
            if not 0.0 <= frac < 1.0:
                raise DataError(f"{name} {frac}: must be a fraction in [0, 1)")
        if self.val + self.test >= 1.0:
            raise DataError(f"--val {self.val} + --test {self.test} leave nothing to train on; keep their sum below 1")


@dataclass
class SKUResult:
    sku_id: str
    # (split, jpeg, content hash, index in the SKU's images)
    samples: list[tuple[str, bytes, str, int]] = field(default_factory=list)
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    groups: list[list[str]] = field(default_factory=list)  # near-duplicate groups (paths), size > 1
    new_pins: dict[str, str] = field(default_factory=dict)
    cuts: dict[str, list[float]] = field(default_factory=dict)  # this SKU's split cuts (hash units)
    dedup_distance: int = 0  # the near-duplicate distance used: lower than asked where views look alike
    straddling: list[list[str]] = field(default_factory=list)  # groups whose given (CSV) splits differ


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise UnreadableImage(f"unreadable: {exc.strerror or exc}") from None


def process_sku(
    images: list[SourceImage], settings: BuildSettings, pinned: dict[str, str], cuts: dict | None = None
) -> SKUResult:
    """Decode, check, resize, dedup and split all images of one SKU (runs in a worker)."""
    result = SKUResult(images[0].sku_id)
    prepared, paths, given, positions = [], [], [], []
    first: dict[str, str] = {}  # content hash -> path: the same bytes twice in one SKU are one image
    for pos, src in enumerate(images):
        try:
            image = prepare_image(_read_bytes(src.path), settings.size, settings.quality)
        except UnreadableImage as exc:
            result.rejects.append((src.path, str(exc)))
            continue
        if image.content_hash in first:
            result.rejects.append((src.path, f"duplicate: same bytes as {first[image.content_hash]}"))
            continue
        first[image.content_hash] = src.path
        prepared.append(image)
        paths.append(src.path)
        given.append(src.split)
        positions.append(pos)
    if not prepared:
        return result
    groups, result.dedup_distance = near_duplicate_groups([p.phash for p in prepared], settings.dedup_distance)
    hashes = [p.content_hash for p in prepared]
    split = assign_splits(hashes, groups, settings.val, settings.test, pinned, given, cuts)
    result.new_pins, result.cuts = split.new_pins, split.cuts
    result.samples = [(s, p.jpeg, p.content_hash, i) for s, p, i in zip(split.splits, prepared, positions)]
    result.groups = [[paths[i] for i in g] for g in groups if len(g) > 1]
    result.straddling = [[paths[i] for i in g] for g in groups if len({given[i] for i in g if given[i]}) > 1]
    return result


_WORKER_PINS: dict[str, str] = {}


def _init_worker(pinned: dict[str, str]) -> None:
    """Hand the pins to a worker once: sent with every task they would cost O(SKUs x pins)."""
    global _WORKER_PINS
    _WORKER_PINS = pinned


def _process_sku_star(args):
    images, settings, cuts = args
    return process_sku(images, settings, _WORKER_PINS, cuts)


# what litdata reads to size a writer's world (besides an initialised torch.distributed, which they override)
_LITDATA_WORLD_VARS = {"WORLD_SIZE": "1", "GLOBAL_RANK": "0", "NNODES": "1"}


def _standalone_writer(out: Path, chunk_bytes: str):
    """A litdata ``BinaryWriter`` that knows it is the build's only writer, whatever job the build runs in.

    litdata sizes a writer's world from torch.distributed or from ``WORLD_SIZE``/``GLOBAL_RANK``/``NNODES``,
    which torchrun and SageMaker export to every rank, and ``merge()`` on rank 0 waits until every rank of
    that world has written its index. A build runs in one process (the quickstart's on the rank that holds
    its lock), so inside a 2-rank job rank 0 waited forever for an index rank 1 never writes: the
    quickstart under torchrun hung with ``shards.partial/`` left behind. The writer reads its world once,
    when it is made, so the build states it for that moment.
    """
    saved = {name: os.environ.get(name) for name in _LITDATA_WORLD_VARS}
    os.environ.update(_LITDATA_WORLD_VARS)
    try:
        return BinaryWriter(str(out), chunk_bytes=chunk_bytes)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _SplitWriters:
    """One litdata BinaryWriter per split, created on first use."""

    def __init__(self, out: Path, chunk_bytes: str, on_chunk=None):
        self.out, self.chunk_bytes, self.on_chunk = out, chunk_bytes, on_chunk
        self.writers: dict = {}
        self.counts: Counter = Counter()
        self.sha256: dict[str, dict[str, str]] = {}  # split -> chunk file -> sha256, for `shards verify`

    def add(self, split: str, sample: dict) -> None:
        if split not in self.writers:
            (self.out / split).mkdir(parents=True, exist_ok=True)
            self.writers[split] = _standalone_writer(self.out / split, self.chunk_bytes)
        chunk = self.writers[split].add_item(self.counts[split], sample)
        self.counts[split] += 1
        if chunk:
            self._finished(split, chunk)

    def _finished(self, split: str, chunk: str) -> None:
        """A chunk file is complete: hash it while it is here (an S3 build uploads and deletes it next)."""
        self._hash(split, chunk)
        if self.on_chunk:
            self.on_chunk(chunk, f"{split}/{Path(chunk).name}")

    def _hash(self, split: str, chunk: str) -> None:
        self.sha256.setdefault(split, {})[Path(chunk).name] = sha256(chunk)

    def close(self) -> None:
        for split, writer in self.writers.items():
            for chunk in writer.done():  # the last chunks (upload_tree takes them after the build)
                self._hash(split, chunk)
            writer.merge()


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
    listing = list_sources(input_path)
    sources = listing.images
    if all(s.split for s in sources) and not any(s.split == "train" for s in sources):
        raise DataError(
            f"--input {input_path}: every row has a split and none is train; "
            "mark some rows split=train or leave split empty to have them split by hash"
        )
    previous = previous_state(label_map_path)  # before the output is touched: it may live there
    if previous[3] and previous[3]["path"] == (str(out).rstrip("/") if is_s3(out) else str(Path(out).resolve())):
        previous = (*previous[:3], None)  # a rebuild over its own manifest, not a delta
    if not is_s3(out):
        final = local_out(Path(out))
        staging = Path(tempfile.mkdtemp(prefix=STAGING, dir=final))
        try:
            manifest = _build(listing, input_path, staging, settings, previous, progress)
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

    uploader = S3ShardUploader(str(out))
    uploader.prepare()  # bucket, credentials and prefix checked before any image is read
    with tempfile.TemporaryDirectory(prefix="skuvision-shards-") as scratch:
        local = Path(scratch) / "build"
        local.mkdir()
        try:
            manifest = _build(listing, input_path, local, settings, previous, progress, uploader.submit)
            uploader.upload_tree(local)
            uploader.finish(local / MANIFEST)
        finally:
            uploader.close()  # no upload outlives the scratch directory
    manifest["output"] = str(out)
    return manifest


def _same_bytes(path: str, content_hash_hex: str) -> bool:
    try:
        return content_hash(_read_bytes(path)) == content_hash_hex
    except UnreadableImage:  # gone since: not provably the same
        return False


def _build(
    listing: Listing,
    input_path,
    out: Path,
    settings: BuildSettings,
    previous: tuple[LabelMap, dict[str, str], dict[str, dict], dict | None],
    progress: bool,
    on_chunk=None,
) -> dict:
    label_map, pinned, cuts, base = previous
    sources = listing.images

    per_sku_sources = [list(g) for _, g in groupby(sources, key=lambda s: s.sku_id)]
    offsets = [0]
    for imgs in per_sku_sources:
        offsets.append(offsets[-1] + len(imgs))

    tasks = ((imgs, settings, cuts.get(imgs[0].sku_id)) for imgs in per_sku_sources)
    writers = _SplitWriters(out, settings.chunk_bytes, on_chunk)
    rejects: list[tuple[str, str]] = list(listing.skipped)
    conflicts: list[Conflict] = list(listing.conflicts)
    first_copy: dict[int, int] = {}  # 64-bit content-hash prefix -> index in sources of the first copy
    empty: list[str] = []
    per_sku: dict[str, dict[str, int]] = {}
    groups: dict[str, list[list[str]]] = {}
    free: dict[str, Counter] = {}
    lowered: dict[str, int] = {}
    straddling: list[list[str]] = []
    start = time.perf_counter()

    bar = tqdm(total=len(sources), desc="shards build", unit="img", disable=not progress)
    pool = None
    if settings.workers > 1:
        pool = ProcessPoolExecutor(settings.workers, initializer=_init_worker, initargs=(dict(pinned),))
    else:
        _init_worker(dict(pinned))
    try:
        results = pool.map(_process_sku_star, tasks, chunksize=1) if pool else map(_process_sku_star, tasks)
        for n, res in enumerate(results):
            kept = []
            for sample in res.samples:
                index = offsets[n] + sample[3]
                other = first_copy.setdefault(int(sample[2][:16], 16), index)
                if other != index and _same_bytes(sources[other].path, sample[2]):
                    src, first = sources[index], sources[other]  # never one SKU: process_sku drops those
                    reason = f"label conflict: same bytes as {first.path} (SKU {first.sku_id!r}, kept there)"
                    res.rejects.append((src.path, reason))
                    conflicts.append(Conflict(src.path, src.sku_id, first.path, first.sku_id, "same bytes"))
                else:
                    kept.append(sample)
            src = per_sku_sources[n][0]
            if kept:
                label_map.extend([res.sku_id])  # SKU-id order; SKUs of an earlier build keep their index
            if res.sku_id in label_map:
                label_map.set_attributes(res.sku_id, src.brand, src.category)
            if kept:
                label = label_map.index(res.sku_id)
                for split, jpeg, key, _ in kept:
                    writers.add(split, {"image": jpeg, "label": label, "key": key})
                per_sku[res.sku_id] = dict(Counter(s[0] for s in kept))
                free[res.sku_id] = Counter(s[0] for s in kept if not sources[offsets[n] + s[3]].split)
            else:
                empty.append(res.sku_id)
            straddling += res.straddling
            rejects.extend(res.rejects)
            pinned.update(res.new_pins)
            if res.cuts:
                cuts[res.sku_id] = res.cuts
            if kept and res.dedup_distance < settings.dedup_distance:
                lowered[res.sku_id] = res.dedup_distance
            if res.groups:
                groups[res.sku_id] = res.groups
            bar.update(len(res.samples) + len(res.rejects))
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    writers.close()
    elapsed = time.perf_counter() - start
    fractions, warnings = split_report(per_sku, free, settings.val, settings.test, straddling)
    if not writers.counts["train"]:
        raise DataError(
            f"--input {input_path}: the build left no training images ({_counts(writers.counts)}); "
            "lower --val/--test, add images, or give rows split=train; no manifest was written"
        )
    notes = []  # not about splits: printed, and recorded in their own manifest fields
    if empty:
        notes.append(
            f"{len(empty)} SKU(s) have no valid image (all rejected, see rejects.csv), so no samples and, "
            f"unless an earlier build's --label-map holds them, no class: {named(empty)}"
        )
    if conflicts:
        c = conflicts[0]
        notes.append(
            f"{len(conflicts)} label conflict(s): one image under two SKUs, kept under the first and the "
            f"later copy rejected (rejects.csv, manifest label_conflicts); first: {c.path} as {c.sku_id!r} "
            f"vs {c.kept_path} as {c.kept_sku!r}"
        )
    for warning in warnings + notes:
        print(f"skuvision: warning: {warning}", file=sys.stderr)

    with (out / REJECTS).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "reason"])
        w.writerows(rejects)
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_by": f"skuvision {__version__}",
        "input": str(input_path),
        "settings": {k: v for k, v in vars(settings).items() if k != "workers"},
        "num_classes": len(label_map),
        "label_map": label_map.to_dict(),
        "splits": {s: {"dir": s, "count": writers.counts[s]} for s in SPLITS},
        "chunk_sha256": writers.sha256,  # split -> chunk file -> sha256: `shards verify` finds flipped bits
        "per_sku": per_sku,
        "rejects": len(rejects),
        "label_conflicts": [c.to_dict() for c in conflicts],
        "empty_skus": empty,  # SKUs listed in the input whose every image was rejected
        "split_fractions": fractions,
        "split_warnings": warnings,
        "near_duplicate_groups": groups,
        "dedup_distance_lowered": lowered,  # SKU -> bits used, where its views look alike
        "pinned_splits": pinned,
        "split_cuts": cuts,
        "build_seconds": round(elapsed, 2),
    }
    if base:  # a delta: names the shard set it extends (skuvision.onboarding replays from its train split)
        manifest["base"] = base
    write_json(out / MANIFEST, manifest, indent=1)  # a crash never leaves a half-written manifest
    return manifest


def _counts(counts: Counter) -> str:
    return ", ".join(f"{s} {counts[s]}" for s in SPLITS)


def verify_shards(root: str | Path, progress: bool = True) -> list[str]:
    """Check every chunk's sha256 (local shards) and decode every sample; returns the problems (none: all good).

    A flipped bit inside an image that still decodes, or in a label that stays in range, is found only by
    the chunk hashes the build recorded (``chunk_sha256`` in the manifest).
    """
    manifest = read_manifest(root)
    skus = LabelMap.from_dict(manifest["label_map"]).skus
    problems = [] if is_s3(root) else chunk_hash_problems(root, manifest)
    for split, info in manifest["splits"].items():
        if info["count"] == 0:
            continue
        ds = StreamingDataset(os.path.join(str(root), info["dir"]))
        if len(ds) != info["count"]:
            problems.append(f"{split}: {len(ds)} samples in shards, manifest says {info['count']}")
        seen: Counter = Counter()
        for i in tqdm(range(len(ds)), desc=f"verify {split}", unit="img", disable=not progress):
            sample = ds[i]
            try:
                decode_to_tensor(sample["image"])
            except (RuntimeError, OSError) as exc:  # torchvision's / PIL's decoder
                problems.append(f"{split}[{i}]: image does not decode ({exc})")
            if not 0 <= sample["label"] < len(skus):
                problems.append(f"{split}[{i}]: label {sample['label']} outside 0..{len(skus) - 1}")
                continue
            seen[skus[sample["label"]]] += 1
        for sku_id, counts in manifest["per_sku"].items():
            if seen[sku_id] != counts.get(split, 0):
                problems.append(
                    f"{split}: SKU {sku_id} has {seen[sku_id]} samples, manifest says {counts.get(split, 0)}"
                )
    return problems


def chunk_hash_problems(root: str | Path, manifest: dict) -> list[str]:
    """Chunk files whose sha256 is not the one the build recorded (older builds recorded none: nothing to check)."""
    problems = []
    for split, files in (manifest.get("chunk_sha256") or {}).items():
        directory = Path(root) / manifest["splits"][split]["dir"]
        for name, digest in files.items():
            path = directory / name
            if not path.is_file():
                problems.append(f"{path}: chunk missing")
            elif sha256(path) != digest:
                problems.append(
                    f"{path}: sha256 is not the build's (changed after the build: flipped bits, "
                    "a partial copy, or another build's chunk)"
                )
    return problems
