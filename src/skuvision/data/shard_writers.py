"""One litdata writer per split, each hashing its chunks as they complete (for ``shards verify``)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from litdata.streaming.writer import BinaryWriter

from skuvision.files import sha256

# what litdata reads to size a writer's world (besides an initialised torch.distributed, which they override)
_LITDATA_WORLD_VARS = {"WORLD_SIZE": "1", "GLOBAL_RANK": "0", "NNODES": "1"}
_LITDATA_RANK_VAR = "DATA_OPTIMIZER_GLOBAL_RANK"  # a writer's rank: its chunk and index file names


def standalone_writer(out: Path, chunk_bytes: str, rank: int = 0):
    """A litdata ``BinaryWriter`` that knows it is the build's only writer, whatever job the build runs in.

    litdata sizes a writer's world from ``WORLD_SIZE``/``GLOBAL_RANK``/``NNODES``, which torchrun and
    SageMaker export to every rank, and its ``merge()`` waits for every rank's index: inside a 2-rank
    job a build would wait forever for a rank that never writes. The world is read once, at creation.
    ``rank`` > 0: one of several writers of a split (the merge's), each writing ``chunk-<rank>-*.bin``
    and ``<rank>.index.json`` until :func:`join_ranks` joins them.
    """
    saved = {name: os.environ.get(name) for name in (*_LITDATA_WORLD_VARS, _LITDATA_RANK_VAR)}
    os.environ.update(_LITDATA_WORLD_VARS)
    os.environ.pop(_LITDATA_RANK_VAR, None)  # while it is set, litdata takes its world from the optimize() pool's
    try:
        writer = BinaryWriter(str(out), chunk_bytes=chunk_bytes)
        os.environ[_LITDATA_RANK_VAR] = str(rank)
        if writer.rank != rank:  # read (and kept) now, while the variable says so
            raise RuntimeError(f"litdata gave the writer rank {writer.rank}, not {rank}")
        return writer
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class SplitWriters:
    """One litdata BinaryWriter per split, created on first use."""

    def __init__(self, out: Path, chunk_bytes: str, on_chunk=None, rank: int = 0, ranks: int = 1):
        self.out, self.chunk_bytes, self.on_chunk = out, chunk_bytes, on_chunk
        self.rank, self.ranks = rank, ranks
        self.writers: dict = {}
        self.counts: Counter = Counter()
        self.sha256: dict[str, dict[str, str]] = {}  # split -> chunk file -> sha256, for `shards verify`

    def add(self, split: str, sample: dict) -> None:
        if split not in self.writers:
            (self.out / split).mkdir(parents=True, exist_ok=True)
            self.writers[split] = standalone_writer(self.out / split, self.chunk_bytes, self.rank)
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
            for chunk in writer.done():  # the last chunks
                self._finished(split, chunk)
            if self.ranks == 1:
                writer.merge()


def join_ranks(out: Path, chunk_bytes: str, ranks: int) -> None:
    """One ``index.json`` for a split written by ``ranks`` writers, their chunks in rank order (litdata's merge)."""
    missing = [r for r in range(ranks) if not (out / f"{r}.index.json").is_file()]
    if missing:  # litdata's merge would wait for them forever
        raise RuntimeError(f"{out}: writer rank(s) {missing} of {ranks} left no index; the merge wrote no index.json")
    standalone_writer(out, chunk_bytes).merge(num_workers=ranks)
