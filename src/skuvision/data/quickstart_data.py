"""First-use generation of the embedded synthetic catalogue and its shards.

``python train.py`` must work on a fresh machine with no data. Under torchrun
every rank reaches this at once, before the process group exists (``skuvision.train.run``
calls it on every rank ahead of the Trainer): a file lock lets one process build while the
others wait, then all read the same shards. The wait is bounded (``wait_s``): a builder
that stops making progress turns into one error line on the waiting ranks, not a stalled
job; a builder that dies releases the lock, and the next rank builds.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import time
from pathlib import Path

from skuvision.data.manifest import MANIFEST
from skuvision.data.shards import BuildSettings, build_shards
from skuvision.data.synthetic import write_catalogue
from skuvision.errors import DataError

log = logging.getLogger(__name__)


def ensure_synthetic_shards(
    root: str | Path,
    skus: int = 20,
    images_per_sku: int = 40,
    size: int = 128,
    seed: int = 0,
    shard_size: int | None = None,
    val: float = 0.15,
    test: float = 0.15,
    workers: int = 2,
    wait_s: float = 1800.0,
) -> Path:
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f".{root.name}.lock"
    with open(lock_path, "w") as lock:
        _lock_within(lock, lock_path, root, wait_s)
        if (root / MANIFEST).exists():
            return root
        images = root.parent / f"{root.name}_images"
        log.info(
            "generating synthetic catalogue: %d SKUs x %d images at %d px -> %s", skus, images_per_sku, size, images
        )
        write_catalogue(images, skus, images_per_sku, size=size, seed=seed, workers=workers)
        settings = BuildSettings(size=shard_size or size, val=val, test=test, workers=workers)
        tmp = root.parent / f"{root.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        build_shards(images, tmp, settings)
        tmp.rename(root)
        log.info("synthetic shards ready at %s", root)
    return root


def _lock_within(lock, lock_path: Path, root: Path, wait_s: float) -> None:
    """Take the build lock, or raise a DataError after ``wait_s`` seconds of another process holding it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise DataError(
                    f"{lock_path}: another process has held this lock, building the synthetic catalogue into "
                    f"{root}, for over {wait_s:.0f} s; if it is stuck, stop it (`fuser {lock_path}` names it), "
                    "or wait longer with data.synthetic.wait_s=SECONDS"
                ) from None
            time.sleep(0.5)
