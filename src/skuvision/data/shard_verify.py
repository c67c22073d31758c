"""``shards verify``: every chunk's sha256 (local shards) and every sample decoded, against the manifest."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from litdata import StreamingDataset
from tqdm.auto import tqdm

from skuvision.data.imageio import decode_to_tensor
from skuvision.data.labels import LabelMap
from skuvision.data.manifest import read_manifest
from skuvision.data.remote import is_s3
from skuvision.files import sha256


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
