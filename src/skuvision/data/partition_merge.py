"""``shards merge``: join the partitions of one build into the shard set a one-machine build would write.

The merge walks the whole listing in SKU order, as a one-machine build does: it finds the same
bytes under two SKUs across partitions, assigns the label map once, and plans each kept sample's
place; then several processes rewrite the samples with their labels into one litdata dataset per
split (``skuvision.data.merge_writers``), in listing order. So the result (label map, split of every image,
sample bytes per split, rejects, conflicts) does not depend on how many partitions built it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from skuvision.data.build_settings import BuildSettings
from skuvision.data.merge_writers import PlannedSplit, write_planned
from skuvision.data.partition_store import partition_store
from skuvision.data.partitions import build_fingerprint, partition_name, read_record, rebuild_command
from skuvision.data.remote import is_s3
from skuvision.data.shards import (
    BuildState,
    by_sku,
    finish_build,
    into_local_out,
    into_s3_out,
    previous_for,
    read_listing,
)
from skuvision.data.sku_work import SKUResult
from skuvision.data.splits import SPLITS
from skuvision.errors import DataError
from skuvision.quiet import quiet_library_noise


def merge_partitions(out: str | Path, progress: bool = True, workers: int = 1) -> dict:
    """Check that every partition under ``out/partitions`` is there, complete and of one build; write the shard set.

    ``workers`` processes rewrite the samples (``skuvision.data.merge_writers``). ``out`` may be ``s3://``:
    each writer fetches the partition chunks its range needs, one at a time, and uploads its chunks as
    they close; the manifest goes up last (as a one-machine build to S3 does).
    """
    quiet_library_noise()  # each writer opens a litdata dataset per partition and split it reads
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
            Path(out), lambda staging: _merge(records, store, listing, previous, settings, staging, progress, workers)
        )
    manifest = into_s3_out(
        str(out),
        lambda local, _: _merge(records, store, listing, previous, settings, local, progress, workers, str(out)),
    )
    manifest["output"] = str(out)
    return manifest


def load_partitions(store) -> list[dict]:
    """Each partition's partial.json, in partition order; one line naming a missing, partial or foreign one."""
    found = store.records(parse=read_record)
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


def _merge(
    records, store, listing, previous, settings, staging: Path, progress: bool, workers: int, upload_to=None
) -> dict:
    start = time.perf_counter()
    state, planned = _decide(records, listing, previous, settings, progress)
    decided = time.perf_counter()
    sources = [store.where(partition_name(k, len(records))) for k in range(len(records))]
    counts, sha256 = write_planned(planned, sources, staging, settings.chunk_bytes, workers, upload_to, progress)
    end = time.perf_counter()
    built_in = {
        "count": len(records),
        "build_seconds": [r["build_seconds"] for r in records],
        "merge_seconds": {"decide": round(decided - start, 2), "write": round(end - decided, 2)},
        "merge_workers": workers,
    }
    return finish_build(
        state,
        Written(counts, sha256),
        staging,
        records[0]["input"],
        settings,
        previous,
        end - start,
        {"partitions": built_in},
    )


@dataclass
class Written:
    """What the writers of a merged set wrote: samples per split, and split -> chunk file -> sha256."""

    counts: Counter
    sha256: dict[str, dict[str, str]]


def _decide(records, listing, previous, settings, progress: bool) -> tuple[BuildState, dict[str, PlannedSplit]]:
    """Walk the listing in SKU order as a one-machine build does: conflicts, label map, and each kept sample's place.

    A sample's place is its partition and its position in that partition's split: partitions wrote
    every sample they kept, in listing order, so the position counts the SKU's recorded samples.
    """
    owner = {sku: k for k, record in enumerate(records) for sku in record["skus"]}
    offsets = {images[0].sku_id: offset for images, offset in by_sku(listing.images)}

    def same_bytes(other: int, digest: str) -> bool:
        """Whether the sample at listing index ``other`` (an earlier SKU's, any partition) has this content hash."""
        sku = listing.images[other].sku_id
        return records[owner[sku]]["skus"][sku]["samples"].digest_at(other - offsets[sku]) == digest

    state = BuildState.start(listing, previous, same_bytes=same_bytes)
    planned = {split: PlannedSplit() for split in SPLITS}
    written = Counter()  # (partition, split) -> samples that partition wrote before this SKU's
    with tqdm(total=len(listing.images), desc="shards merge (decide)", unit="img", disable=not progress) as bar:
        for images, offset in by_sku(listing.images):
            k = owner[images[0].sku_id]
            result = _sku_result(records[k]["skus"][images[0].sku_id])
            kept = state.drop_cross_sku_copies(result, offset)
            state.record(result, kept, images[0], offset, settings.dedup_distance)
            label = state.label_map.index(result.sku_id) if kept else -1
            keep = set(kept)
            for sample in result.samples:
                if sample in keep:
                    index = offset + sample.position
                    planned[sample.split].add(k, written[k, sample.split], index, label, sample.content_hash)
                written[k, sample.split] += 1
            bar.update(len(images))
    return state, planned


def _sku_result(record: dict) -> SKUResult:
    values = dict(record)
    values["samples"] = record["samples"].samples()
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
