"""One partition of a shard build: a deterministic set of whole SKUs, built into ``out/partitions/<K>-of-<P>/``.

A SKU never spans partitions (its splits and near-duplicate groups need all its images), and
partitions are balanced by image count. A partition holds its chunks (samples carry their listing
index, not a label: the label map is assigned once, by the merge), and ``partial.json`` with each
SKU's decisions; that file is written last (``skuvision.data.partition_store``: renamed into place on a
local path, uploaded last on S3), so a partition killed mid-write is never taken for complete.
``skuvision.data.partition_merge`` joins them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from array import array
from dataclasses import fields
from pathlib import Path

from tqdm.auto import tqdm

from skuvision.data.build_settings import BuildSettings
from skuvision.data.partition_store import PARTIAL, partition_store
from skuvision.data.remote import check_bucket, is_s3
from skuvision.data.shard_dirs import PreviousBuild
from skuvision.data.shard_writers import SplitWriters
from skuvision.data.shards import by_sku, previous_for, read_listing, sku_results
from skuvision.data.sku_work import Sample, SKUResult
from skuvision.data.sources import Listing
from skuvision.data.splits import SPLITS
from skuvision.errors import DataError
from skuvision.files import write_json


def partition_name(partition: int, partitions: int) -> str:
    return f"{partition}-of-{partitions}"


def host_rank(resource_config: str | Path) -> tuple[int, int]:
    """This instance's rank among the job's hosts (sorted by name: SageMaker does not promise an order), and their number."""
    try:
        config = json.loads(Path(resource_config).read_text())
        hosts, current = sorted(config["hosts"]), config["current_host"]
        return hosts.index(current), len(hosts)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(
            f"--partition host: cannot read this instance's rank from {resource_config} ({exc}); "
            "inside a SageMaker Processing job it is written by SageMaker, elsewhere pass --partition K"
        ) from None


def partitions_of_host(resource_config: str | Path, partitions: int) -> list[int]:
    """The partitions this instance builds: K with K mod N = its rank among the N hosts (sorted by name)."""
    rank, hosts = host_rank(resource_config)
    return [k for k in range(partitions) if k % hosts == rank]


def partition_list(text: str) -> list[int]:
    """``K[,K...]`` as given to ``--retry-partition``: sorted, without repeats; one line for anything else."""
    try:
        return sorted({int(k) for k in str(text).split(",")})
    except ValueError:
        raise DataError(f"--retry-partition {text}: pass partition numbers, e.g. 2 or 1,3") from None


def assign_partitions(listing: Listing, partitions: int) -> dict[str, int]:
    """SKU -> partition: largest SKUs first, each to the partition with the fewest images (ties: lowest K)."""
    sizes = [(len(images), images[0].sku_id) for images, _ in by_sku(listing.images)]
    load = [0] * partitions
    owner = {}
    for count, sku in sorted(sizes, key=lambda s: (-s[0], s[1])):
        k = min(range(partitions), key=lambda i: (load[i], i))
        owner[sku] = k
        load[k] += count
    return owner


def build_fingerprint(listing: Listing, settings: BuildSettings, previous: PreviousBuild, partitions: int) -> str:
    """What makes partitions parts of one build: settings, the whole input listing, the --label-map base, P."""
    digest = hashlib.sha256()
    for src in listing.images:
        digest.update(json.dumps([src.path, src.sku_id, src.brand, src.category, src.split]).encode())
    digest.update(json.dumps([list(r) for r in listing.skipped]).encode())
    digest.update(json.dumps([c.to_dict() for c in listing.conflicts], sort_keys=True).encode())
    base = {"label_map": previous.label_map.to_dict(), "pins": previous.pinned, "cuts": previous.cuts}
    digest.update(json.dumps(base, sort_keys=True).encode())
    digest.update(json.dumps([_recorded(settings), partitions], sort_keys=True).encode())
    return digest.hexdigest()


def _recorded(settings: BuildSettings) -> dict:
    return {k: v for k, v in vars(settings).items() if k != "workers"}  # workers change speed, not results


def rebuild_command(record: dict, partition: int) -> str:
    """The command line that builds ``partition`` of the build ``record`` (a partition's partial.json) belongs to."""
    s = record["settings"]
    label_map = f" --label-map {record['label_map']}" if record.get("label_map") else ""
    return (
        f"skuvision shards build --input {record['input']} --out {record['out']} --size {s['size']} "
        f"--quality {s['quality']} --val {s['val']} --test {s['test']} --dedup-distance {s['dedup_distance']}"
        f"{label_map} --partitions {record['partitions']} --partition {partition}"
    )


def build_partition(
    input_path: str | Path,
    out: str | Path,
    settings: BuildSettings,
    partitions: int,
    partition: int,
    label_map_path: str | None = None,
    progress: bool = True,
) -> dict:
    """Build partition ``partition`` of ``partitions`` into ``out/partitions/<K>-of-<P>/``; returns its record."""
    settings.validate()
    if partitions < 1 or not 0 <= partition < partitions:
        raise DataError(f"--partition {partition} --partitions {partitions}: need 0 <= K < P")
    listing = read_listing(input_path)
    previous = previous_for(label_map_path, out)
    fingerprint = build_fingerprint(listing, settings, previous, partitions)
    store = partition_store(out)
    if is_s3(out):
        check_bucket(store.client, str(out))  # bucket and credentials checked before any image is read
    _refuse_other_builds(store, fingerprint, out)
    owner = assign_partitions(listing, partitions)
    mine = [(images, offset) for images, offset in by_sku(listing.images) if owner[images[0].sku_id] == partition]
    name = partition_name(partition, partitions)
    staging = store.staging(name)
    try:
        record = _write_partition(mine, settings, previous, staging, progress)
        record.update(
            fingerprint=fingerprint,
            partitions=partitions,
            partition=partition,
            input=str(input_path),
            out=str(out),
            label_map=label_map_path,
            settings=_recorded(settings),
        )
        write_json(staging / PARTIAL, record)  # last: a partition without it is incomplete
        store.publish(staging, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def _refuse_other_builds(store, fingerprint: str, out) -> None:
    for name, record in store.records(parse=_fingerprint_only).items():
        if record.get("fingerprint") != fingerprint:
            raise DataError(
                f"--out {out}: {store.where(name)} belongs to another build (other input, settings, --label-map or "
                f"--partitions); merge or remove {store.where('')} first, or choose another --out"
            )


def _fingerprint_only(text: bytes) -> dict:
    """What a rerun needs of the partitions already there: which build they belong to, not their decisions."""
    return {"fingerprint": json.loads(text).get("fingerprint")}


def _write_partition(mine, settings: BuildSettings, previous: PreviousBuild, staging: Path, progress: bool) -> dict:
    """Every sample of this partition's SKUs (no label yet), and each SKU's decisions for the merge."""
    writers = SplitWriters(staging, settings.chunk_bytes)
    skus: dict[str, dict] = {}
    start = time.perf_counter()
    total = sum(len(images) for images, _ in mine)
    with tqdm(total=total, desc="shards build (partition)", unit="img", disable=not progress) as bar:
        with sku_results([images for images, _ in mine], settings, previous) as results:
            for (_, offset), result in zip(mine, results):
                for sample in result.samples:
                    writers.add(sample.split, {"image": sample.jpeg, "index": offset + sample.position})
                skus[result.sku_id] = sku_record(result)
                bar.update(len(result.samples) + len(result.rejects))
    writers.close()
    return {
        "skus": skus,
        "counts": dict(writers.counts),
        "chunk_sha256": writers.sha256,
        "build_seconds": round(time.perf_counter() - start, 2),
    }


def sku_record(result: SKUResult) -> dict:
    """A SKU's result without its image bytes (those are in the chunks): what the merge needs to decide."""
    record = {f.name: getattr(result, f.name) for f in fields(result) if f.name != "samples"}
    record["samples"] = [[s.split, s.content_hash, s.position] for s in result.samples]
    return record


DIGEST_BYTES = hashlib.sha1().digest_size  # content hashes are sha1 hex digests (skuvision.data.imageio)


class PackedSamples:
    """One SKU's recorded samples (split, content hash, position), packed into three byte strings.

    As parsed JSON lists a sample costs ~350 bytes; the merge holds every partition's samples at
    once, so at 4 M originals that was ~1.4 GB of decisions. Packed it is ~25 bytes a sample.
    """

    __slots__ = ("splits", "digests", "positions")

    def __init__(self, recorded: list[list]):
        self.splits = bytes(SPLITS.index(split) for split, _, _ in recorded)
        self.digests = b"".join(bytes.fromhex(digest) for _, digest, _ in recorded)
        self.positions = array("I", (position for _, _, position in recorded))

    def digest(self, i: int) -> str:
        return self.digests[i * DIGEST_BYTES : (i + 1) * DIGEST_BYTES].hex()

    def samples(self) -> list[Sample]:
        """The SKU's samples without their bytes (those are in the partition's chunks), in recorded order."""
        return [
            Sample(SPLITS[code], b"", self.digest(i), p) for i, (code, p) in enumerate(zip(self.splits, self.positions))
        ]

    def digest_at(self, position: int) -> str | None:
        """The content hash of the sample at ``position`` in the SKU's images; None where it was rejected."""
        try:
            return self.digest(self.positions.index(position))
        except ValueError:
            return None


def read_record(text: bytes | str) -> dict:
    """A partition's partial.json, each SKU's samples packed as it is read (one partition's JSON parsed at a time)."""
    record = json.loads(text)
    for decided in record.get("skus", {}).values():
        decided["samples"] = PackedSamples(decided["samples"])
    return record
