"""First-use generation of the embedded synthetic catalogue and its shards.

``python train.py`` must work on a fresh machine with no data. Under torchrun
every rank reaches this at once, so a file lock lets one process build while the
others wait, then all read the same shards.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
from pathlib import Path

from skuvision.data.shards import MANIFEST, BuildSettings, build_shards

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
) -> Path:
    from skuvision.data.synthetic import write_catalogue

    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
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
