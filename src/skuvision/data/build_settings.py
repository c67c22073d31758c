"""The shard build's settings, in one place: the command line's options take their defaults from here.

Kept free of torch and litdata so that ``skuvision --help`` can show these defaults without loading them.
"""

from __future__ import annotations

import os

from skuvision.errors import DataError

RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"  # where a SageMaker Processing instance learns its rank


def all_cores() -> int:
    """The command line builds with every core by default; library callers pass ``workers`` themselves."""
    return max(1, os.cpu_count() or 1)


class BuildSettings:
    """A plain class, not a dataclass: ``dataclasses`` (and ``inspect``) would cost ``--help`` ~20 ms."""

    def __init__(
        self,
        size: int = 320,  # shorter side after resizing (never upscales)
        quality: int = 90,  # JPEG quality of the re-encoded images
        val: float = 0.1,
        test: float = 0.1,
        dedup_distance: int = 8,  # phash bits; -1 disables near-duplicate grouping (scripts/benchmark_dedup.py)
        chunk_bytes: str = "64MB",
        workers: int = 1,
    ):
        self.size, self.quality, self.val, self.test = size, quality, val, test
        self.dedup_distance, self.chunk_bytes, self.workers = dedup_distance, chunk_bytes, workers

    def __repr__(self) -> str:
        return f"BuildSettings({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

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
