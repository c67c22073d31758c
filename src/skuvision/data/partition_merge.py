"""``shards merge``: join the partitions of one build into the shard set a one-machine build would write.

The merge walks the whole listing in SKU order, as a one-machine build does: it finds the same
bytes under two SKUs across partitions, assigns the label map once, and rewrites each kept sample
with its label into one litdata dataset per split. So the result (label map, split of every image,
sample bytes per split, rejects, conflicts) does not depend on how many partitions built it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from pathlib import Path

from litdata import StreamingDataset
from tqdm.auto import tqdm

from skuvision.data.build_settings import BuildSettings
from skuvision.data.partition_store import partition_store
from skuvision.data.partitions import build_fingerprint, partition_name, rebuild_command
from skuvision.data.remote import allow_http_endpoint_for_litdata, is_s3
from skuvision.data.shard_writers import SplitWriters
from skuvision.data.shards import (
    BuildState,
    by_sku,
    finish_build,
    into_local_out,
    into_s3_out,
    previous_for,
    read_listing,
)
from skuvision.data.sku_work import Sample, SKUResult
from skuvision.errors import DataError
from skuvision.quiet import quiet_library_noise

CACHE = "1GB"  # litdata's max_cache_size per partition and split read from S3 (P x 3 readers at most)


def merge_partitions(out: str | Path, progress: bool = True) -> dict:
    """Check that every partition under ``out/partitions`` is there, complete and of one build; write the shard set.

    ``out`` may be ``s3://``: the partitions are iterated from S3 through a local litdata cache (whole chunks) and the
    merged shard set is uploaded chunk by chunk, manifest last (as a one-machine build to S3 does).
    """
    quiet_library_noise()  # one litdata dataset per partition and split, each with its small-cache advice
    store = partition_store(out)
    records = load_partitions(store)
    first = records[0]
    settings = BuildSettings(**first["settings"])
    listing = read_listing(first["input"])
    previous = previous_for(first["label_map"], out)
    if build_fingerprint(listing, settings, previous, len(records)) != first["fingerprint"]:
        raise DataError(
            f"{store.where('')}: the input listing or --label-map changed since the partitions were built; "
            f"rebuild every partition (e.g. `{rebuild_command(first, 0)}`, then 1..{len(records) - 1})"
        )
    if not is_s3(out):
        return into_local_out(
            Path(out), lambda staging: _merge(records, store, listing, previous, settings, staging, progress)
        )
    allow_http_endpoint_for_litdata()
    with tempfile.TemporaryDirectory(prefix="skuvision-merge-cache-") as cache:
        manifest = into_s3_out(
            str(out),
            lambda local, upload: _merge(records, store, listing, previous, settings, local, progress, upload, cache),
        )
    manifest["output"] = str(out)
    return manifest


def load_partitions(store) -> list[dict]:
    """Each partition's partial.json, in partition order; one line naming a missing, partial or foreign one."""
    found = store.records()
    if not found:
        raise DataError(
            f"{store.where('')}: no complete partition; build them with "
            "`skuvision shards build ... --partitions P --partition K`"
        )
    fingerprints = Counter(r["fingerprint"] for r in found.values())
    ours = max(fingerprints, key=lambda f: (fingerprints[f], f == found[min(found)]["fingerprint"]))
    record = next(r for r in found.values() if r["fingerprint"] == ours)
    partitions = record["partitions"]
    for name, theirs in sorted(found.items()):
        if theirs["fingerprint"] != ours or name != partition_name(theirs["partition"], partitions):
            raise DataError(
                f"{store.where(name)}: a partition of another build (other input, settings, --label-map or "
                f"--partitions); remove it{_rebuild_hint(record, theirs.get('partition'), partitions)}"
            )
    return [_present(store, found, record, k) for k in range(partitions)]


def missing_partitions(store, partitions: int) -> list[int]:
    """The partitions (0..P-1) whose completion marker is not there yet."""
    return [k for k in range(partitions) if not store.complete(partition_name(k, partitions))]


def _present(store, found: dict, record: dict, k: int) -> dict:
    name = partition_name(k, record["partitions"])
    if name not in found:
        state = "incomplete (its build was killed or is still running)" if store.started(name) else "missing"
        raise DataError(f"{store.where(name)}: {state}; build it with `{rebuild_command(record, k)}`, then merge again")
    return found[name]


def _rebuild_hint(record: dict, k, partitions: int) -> str:
    if isinstance(k, int) and 0 <= k < partitions:
        return f" and rebuild it with `{rebuild_command(record, k)}`"
    return ""


class _PartitionReader:
    """A partition's samples of one split, read in order: each sample is taken once, by its listing index.

    On S3 the samples are iterated, not indexed: litdata's iterator downloads whole chunks (a few
    ahead, evicted past ``max_cache_size``), where ``dataset[i]`` would send a ranged GET per sample,
    millions of round trips at catalogue scale.
    """

    def __init__(self, directory: str, cache: str | None = None):
        self.directory = directory
        if cache:
            kwargs = {"cache_dir": os.path.join(cache, directory[5:]), "max_cache_size": CACHE}
            self.samples = iter(StreamingDataset(directory, shuffle=False, **kwargs))
        else:
            dataset = StreamingDataset(directory, shuffle=False)
            self.samples = (dataset[i] for i in range(len(dataset)))

    def image(self, index: int) -> bytes:
        for sample in self.samples:
            if int(sample["index"]) == index:
                return bytes(sample["image"])
            if int(sample["index"]) > index:
                break
        raise DataError(f"{self.directory}: no sample for listing index {index}; rebuild this partition")


def _merge(
    records, store, listing, previous, settings, staging: Path, progress: bool, on_chunk=None, cache=None
) -> dict:
    owner = {sku: k for k, record in enumerate(records) for sku in record["skus"]}
    hashes = _content_hashes(records, listing)
    state = BuildState.start(listing, previous, same_bytes=lambda other, digest: hashes.get(other) == digest)
    readers: dict[tuple[int, str], _PartitionReader] = {}
    writers = SplitWriters(staging, settings.chunk_bytes, on_chunk)
    start = time.perf_counter()
    with tqdm(total=len(listing.images), desc="shards merge", unit="img", disable=not progress) as bar:
        for images, offset in by_sku(listing.images):
            k = owner[images[0].sku_id]
            result = _sku_result(records[k]["skus"][images[0].sku_id])
            kept = state.drop_cross_sku_copies(result, offset)
            state.record(result, kept, images[0], offset, settings.dedup_distance)
            for sample in kept:
                if (k, sample.split) not in readers:
                    where = f"{store.where(partition_name(k, len(records)))}/{sample.split}"
                    readers[k, sample.split] = _PartitionReader(where, cache)
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


def wait_for_partitions(out: str | Path, partitions: int, timeout: float, poll: float = 10.0) -> list[int]:
    """Wait (at most ``timeout`` s) until every partition's completion marker is there; returns those still missing.

    Bounded on purpose: litdata's multi-node merge polls for its peers forever, and a Processing job
    whose other instance died would then run (and bill) until max_run.
    """
    store = partition_store(out)
    deadline = time.monotonic() + timeout
    while True:
        missing = missing_partitions(store, partitions)
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
