"""``shards merge``: join the partitions of one build into the shard set a one-machine build would write.

The merge walks the whole listing in SKU order, as a one-machine build does: it finds the same
bytes under two SKUs across partitions, assigns the label map once, and rewrites each kept sample
with its label into one litdata dataset per split. So the result (label map, split of every image,
sample bytes per split, rejects, conflicts) does not depend on how many partitions built it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from litdata import StreamingDataset
from tqdm.auto import tqdm

from skuvision.data.build_settings import BuildSettings
from skuvision.data.partitions import build_fingerprint, complete_partitions, partition_name, rebuild_command
from skuvision.data.remote import is_s3
from skuvision.data.shard_dirs import PARTITIONS, STAGING
from skuvision.data.shard_writers import SplitWriters
from skuvision.data.shards import BuildState, by_sku, finish_build, into_local_out, previous_for, read_listing
from skuvision.data.sku_work import Sample, SKUResult
from skuvision.errors import DataError


def merge_partitions(out: str | Path, progress: bool = True) -> dict:
    """Check that every partition under ``out/partitions`` is there, complete and of one build; write the shard set."""
    if is_s3(out):
        raise DataError(f"{out}: merging partitions reads and writes a local or FSx path for now; pass one")
    root = Path(out) / PARTITIONS
    records = load_partitions(root)
    first = records[0]
    settings = BuildSettings(**first["settings"])
    listing = read_listing(first["input"])
    previous = previous_for(first["label_map"], out)
    if build_fingerprint(listing, settings, previous, len(records)) != first["fingerprint"]:
        raise DataError(
            f"{root}: the input listing or --label-map changed since the partitions were built; "
            f"rebuild every partition (e.g. `{rebuild_command(first, 0)}`, then 1..{len(records) - 1})"
        )
    return into_local_out(
        Path(out), lambda staging: _merge(records, root, listing, previous, settings, staging, progress)
    )


def load_partitions(root: Path) -> list[dict]:
    """Each partition's partial.json, in partition order; one line naming a missing, partial or foreign one."""
    found = {path.parent.name: json.loads(path.read_text()) for path in complete_partitions(root)}
    if not found:
        raise DataError(
            f"{root}: no complete partition; build them with `skuvision shards build ... --partitions P --partition K`"
        )
    fingerprints = Counter(r["fingerprint"] for r in found.values())
    ours = max(fingerprints, key=lambda f: (fingerprints[f], f == found[min(found)]["fingerprint"]))
    record = next(r for r in found.values() if r["fingerprint"] == ours)
    partitions = record["partitions"]
    for name, theirs in sorted(found.items()):
        if theirs["fingerprint"] != ours or name != partition_name(theirs["partition"], partitions):
            raise DataError(
                f"{root / name}: a partition of another build (other input, settings, --label-map or --partitions); "
                f"remove it{_rebuild_hint(record, theirs.get('partition'), partitions)}"
            )
    records = []
    for k in range(partitions):
        name = partition_name(k, partitions)
        if name not in found:
            killed = any(root.glob(f"{STAGING}{name}-*"))
            state = "incomplete (its build was killed or is still running)" if killed else "missing"
            raise DataError(f"{root / name}: {state}; build it with `{rebuild_command(record, k)}`, then merge again")
        records.append(found[name])
    return records


def _rebuild_hint(record: dict, k, partitions: int) -> str:
    if isinstance(k, int) and 0 <= k < partitions:
        return f" and rebuild it with `{rebuild_command(record, k)}`"
    return ""


class _PartitionReader:
    """A partition's samples of one split, read in order: each sample is taken once, by its listing index."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.dataset = StreamingDataset(str(directory), shuffle=False)
        self.position = 0

    def image(self, index: int) -> bytes:
        while self.position < len(self.dataset):
            sample = self.dataset[self.position]
            self.position += 1
            if int(sample["index"]) == index:
                return bytes(sample["image"])
            if int(sample["index"]) > index:
                break
        raise DataError(f"{self.directory}: no sample for listing index {index}; rebuild this partition")


def _merge(records, root: Path, listing, previous, settings: BuildSettings, staging: Path, progress: bool) -> dict:
    owner = {sku: k for k, record in enumerate(records) for sku in record["skus"]}
    hashes = _content_hashes(records, listing)
    state = BuildState.start(listing, previous, same_bytes=lambda other, digest: hashes.get(other) == digest)
    readers: dict[tuple[int, str], _PartitionReader] = {}
    writers = SplitWriters(staging, settings.chunk_bytes)
    start = time.perf_counter()
    with tqdm(total=len(listing.images), desc="shards merge", unit="img", disable=not progress) as bar:
        for images, offset in by_sku(listing.images):
            k = owner[images[0].sku_id]
            result = _sku_result(records[k]["skus"][images[0].sku_id])
            kept = state.drop_cross_sku_copies(result, offset)
            state.record(result, kept, images[0], offset, settings.dedup_distance)
            for sample in kept:
                if (k, sample.split) not in readers:
                    readers[k, sample.split] = _PartitionReader(root / partition_name(k, len(records)) / sample.split)
                jpeg = readers[k, sample.split].image(offset + sample.position)
                label = state.label_map.index(result.sku_id)
                writers.add(sample.split, {"image": jpeg, "label": label, "key": sample.content_hash})
            bar.update(len(images))
    writers.close()
    built_in = {"count": len(records), "build_seconds": [r["build_seconds"] for r in records]}
    elapsed = time.perf_counter() - start
    return finish_build(
        state, writers, staging, records[0]["input"], settings, previous, elapsed, {"partitions": built_in}
    )


def _content_hashes(records: list[dict], listing) -> dict[int, str]:
    """Listing index -> content hash of every sample the partitions kept: confirms a cross-SKU copy."""
    offsets = {images[0].sku_id: offset for images, offset in by_sku(listing.images)}
    hashes = {}
    for record in records:
        for sku, decided in record["skus"].items():
            for _, digest, position in decided["samples"]:
                hashes[offsets[sku] + position] = digest
    return hashes


def _sku_result(record: dict) -> SKUResult:
    values = dict(record)
    values["samples"] = [Sample(split, b"", digest, position) for split, digest, position in record["samples"]]
    values["rejects"] = [tuple(r) for r in record["rejects"]]
    return SKUResult(**values)
