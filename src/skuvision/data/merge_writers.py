"""The merge's writing half: the kept samples of each split, rewritten by several processes at once.

One litdata writer rewriting every sample was the merge's whole cost (~3,000 samples per CPU-second:
22 CPU-minutes at 4 M originals, on one core while the instance's others idle). Each split's samples,
already decided and in listing order, are cut into contiguous ranges; rank r of a split writes its
range as ``chunk-r-*.bin`` and ``r.index.json``, and litdata's own index merge joins the ranks in
rank order. So the samples, labels and keys of a split keep their order whatever the number of
writers; only the chunk layout differs.
"""

from __future__ import annotations

import gc
import json
import tempfile
from array import array
from bisect import bisect_right
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

from litdata import StreamingDataset
from tqdm.auto import tqdm

from skuvision.data.partitions import DIGEST_BYTES
from skuvision.data.remote import S3ShardUploader, is_s3, join_key, s3_client, split_s3_uri
from skuvision.data.shard_writers import SplitWriters, join_ranks
from skuvision.data.splits import SPLITS
from skuvision.errors import DataError
from skuvision.quiet import quiet_library_noise

RANKS_PER_WORKER = 4  # ranges per worker and split: the progress bar moves, and a slow range does not hold the rest


@dataclass
class PlannedSplit:
    """One split's kept samples in output order: where each is read from, and its label and key."""

    partition: array = field(default_factory=lambda: array("H"))
    position: array = field(default_factory=lambda: array("Q"))  # in that partition's split, as it wrote them
    index: array = field(default_factory=lambda: array("Q"))  # listing index: checked against the sample read
    label: array = field(default_factory=lambda: array("I"))
    digests: bytearray = field(default_factory=bytearray)  # the content hash (the sample's key), packed

    def add(self, partition: int, position: int, index: int, label: int, digest: str) -> None:
        self.partition.append(partition)
        self.position.append(position)
        self.index.append(index)
        self.label.append(label)
        self.digests += bytes.fromhex(digest)

    def __len__(self) -> int:
        return len(self.index)

    def cut(self, start: int, stop: int) -> PlannedSplit:
        d = DIGEST_BYTES
        return PlannedSplit(
            self.partition[start:stop],
            self.position[start:stop],
            self.index[start:stop],
            self.label[start:stop],
            self.digests[start * d : stop * d],
        )


class PartitionSplitReader:
    """One partition's samples of one split, read by position.

    On S3 the partition's chunks are fetched one at a time into a scratch folder and deleted once
    the reader has moved past them (a range is read in order): a writer holds one chunk per
    partition on local disk, never the data set, and fetches only the chunks its range needs.
    """

    def __init__(self, where: str, scratch: str):
        self.where = where
        self.remote = is_s3(where)
        if self.remote:
            self.client = s3_client()
            self.bucket, self.prefix = split_s3_uri(where)
            self.local = Path(tempfile.mkdtemp(prefix="partition-", dir=scratch))
            self.client.download_file(self.bucket, join_key(self.prefix, "index.json"), str(self.local / "index.json"))
            chunks = json.loads((self.local / "index.json").read_text())["chunks"]
            self.names = [c["filename"] for c in chunks]
            self.ends = list(accumulate(c["chunk_size"] for c in chunks))
            self.fetched: int | None = None
            directory = str(self.local)
        else:
            directory = where
        self.dataset = StreamingDataset(directory, shuffle=False)

    def image(self, position: int, index: int) -> bytes:
        if self.remote:
            self._fetch(bisect_right(self.ends, position))
        sample = self.dataset[position]
        if int(sample["index"]) != index:
            raise DataError(
                f"{self.where}: sample {position} holds listing index {int(sample['index'])}, not {index}; "
                "rebuild this partition"
            )
        return bytes(sample["image"])

    def _fetch(self, chunk: int) -> None:
        if chunk == self.fetched:
            return
        if self.fetched is not None:
            (self.local / self.names[self.fetched]).unlink(missing_ok=True)
        name = self.names[chunk]
        self.client.download_file(self.bucket, join_key(self.prefix, name), str(self.local / name))
        self.fetched = chunk


@dataclass
class RangeTask:
    """Rank ``rank`` of split ``split``: write ``planned`` into ``out/split``, reading ``sources[partition]/split``."""

    split: str
    rank: int
    ranks: int
    planned: PlannedSplit
    sources: list[str]
    out: str
    chunk_bytes: str
    upload_to: str | None = None  # s3:// of the merged set: chunks go up as they close, not after the merge


def write_range(task: RangeTask, tick=None) -> tuple[str, int, dict[str, str]]:
    """Write one rank's range; returns (split, samples written, chunk file -> sha256)."""
    uploader = S3ShardUploader(task.upload_to, threads=2) if task.upload_to else None
    on_chunk = uploader.submit if uploader else None
    readers: dict[int, PartitionSplitReader] = {}
    writers = SplitWriters(Path(task.out), task.chunk_bytes, on_chunk, rank=task.rank, ranks=task.ranks)
    planned, d = task.planned, DIGEST_BYTES
    with tempfile.TemporaryDirectory(prefix="skuvision-merge-") as local:
        try:
            for i in range(len(planned)):
                k = planned.partition[i]
                if k not in readers:
                    readers[k] = PartitionSplitReader(f"{task.sources[k]}/{task.split}", local)
                image = readers[k].image(planned.position[i], planned.index[i])
                key = planned.digests[i * d : (i + 1) * d].hex()
                writers.add(task.split, {"image": image, "label": planned.label[i], "key": key})
                if tick and i % 1000 == 999:
                    tick(1000)
            writers.close()
            if uploader:
                uploader.wait()
        finally:
            if uploader:
                uploader.close()
    if tick:
        tick(len(planned) % 1000)
    return task.split, len(planned), writers.sha256.get(task.split, {})


def _write_range_in_worker(task: RangeTask) -> tuple[str, int, dict[str, str]]:
    quiet_library_noise()
    return write_range(task)


def write_planned(
    planned: dict[str, PlannedSplit],
    sources: list[str],
    out: Path,
    chunk_bytes: str,
    workers: int,
    upload_to: str | None = None,
    progress: bool = True,
) -> tuple[Counter, dict[str, dict[str, str]]]:
    """Write every split's planned samples with ``workers`` processes; returns the counts and chunk hashes."""
    tasks, ranks_of = [], {}
    for split in SPLITS:
        n = len(planned[split])
        ranks = ranks_of[split] = min(n, workers * RANKS_PER_WORKER) if workers > 1 else min(n, 1)
        for r in range(ranks):
            start, stop = n * r // ranks, n * (r + 1) // ranks
            tasks.append(
                RangeTask(split, r, ranks, planned[split].cut(start, stop), sources, str(out), chunk_bytes, upload_to)
            )
    counts: Counter = Counter()
    sha256: dict[str, dict[str, str]] = {}
    total = sum(len(p) for p in planned.values())
    with tqdm(total=total, desc="shards merge (write)", unit="img", disable=not progress) as bar:
        if workers <= 1:
            for task in tasks:
                _collect(write_range(task, tick=bar.update), counts, sha256)
        else:
            # the platform's start method, as the build's pool: a forked writer starts in milliseconds, a spawned
            # one re-imports torch and litdata (~5 CPU-s); the parent holds no reader or upload thread yet
            gc.freeze()  # the writers' collectors then leave the parent's objects (listing, records) unwritten:
            try:  # no copy-on-write of ~3 GB per writer at 4 M originals
                with ProcessPoolExecutor(min(workers, len(tasks))) as pool:
                    futures = [pool.submit(_write_range_in_worker, t) for t in tasks]
                    for future in as_completed(futures):
                        result = future.result()
                        bar.update(result[1])
                        _collect(result, counts, sha256)
            finally:
                gc.unfreeze()
    for split, ranks in ranks_of.items():
        if ranks > 1:
            join_ranks(out / split, chunk_bytes, ranks)
    return counts, sha256


def _collect(result: tuple[str, int, dict[str, str]], counts: Counter, sha256: dict) -> None:
    split, written, hashes = result
    counts[split] += written
    if hashes:
        sha256.setdefault(split, {}).update(hashes)
