"""A shard set's ``manifest.json``: the one reader (local dir, FSx path or s3://) and its content hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from skuvision.data.remote import is_s3, read_remote_manifest
from skuvision.data.sources import holds_raw_images
from skuvision.errors import DataError

MANIFEST = "manifest.json"
REJECTS = "rejects.csv"
FORMAT_VERSION = 1


def read_manifest(root: str | Path, key: str | None = None) -> dict:
    """The manifest of the shard set at ``root``, checked to be one this version reads.

    ``key`` names the setting ``root`` came from (``data.root``), so a folder of raw images there is
    told which setting to point at the shards instead.
    """
    if is_s3(str(root)):
        return _checked(read_remote_manifest(str(root)), f"{root}/{MANIFEST}")
    path = Path(root) / MANIFEST
    if not path.is_file():
        if holds_raw_images(Path(root)):
            where, then = (f"{key}={root}", f"set {key}=<shard dir>") if key else (str(root), "use that dir")
            raise DataError(
                f"{where}: holds raw images, not shards (no {MANIFEST}); build shards from it with "
                f"`skuvision shards build --input {root} --out <shard dir>` and {then}"
            )
        raise DataError(
            f"{path}: no shard manifest; build shards with `skuvision shards build --input ... --out {root}`"
        )
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(
            f"{path}: not valid JSON ({exc}); run `skuvision shards verify {root}` or rebuild the shards"
        ) from None
    return _checked(manifest, str(path))


def _checked(manifest: dict, where: str) -> dict:
    version = manifest.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise DataError(
            f"{where}: format_version {version} is newer than this skuvision reads ({FORMAT_VERSION}); "
            f"upgrade skuvision, or rebuild the shards with this version (`skuvision shards build`)"
        )
    if version != FORMAT_VERSION:
        raise DataError(f"{where}: format_version {version} is not {FORMAT_VERSION}; rebuild the shards")
    return manifest


def split_dir(root: str | Path, manifest: dict, split: str, if_empty: str | None = None) -> str:
    """Where ``split``'s chunks live under ``root`` (local or s3://).

    With ``if_empty`` (what the user should do), an empty split is one error line: a loader over no
    images would fail later and less clearly.
    """
    splits = manifest.get("splits", {})
    if split not in splits:
        raise DataError(f"--split {split}: {root} has splits {', '.join(sorted(splits))}; pass one of them")
    if if_empty is not None and not splits[split].get("count"):
        raise DataError(f"{root}: the '{split}' split is empty; {if_empty}")
    return f"{str(root).rstrip('/')}/{splits[split]['dir']}"


def manifest_hash(data: dict) -> str:
    """sha256 of the manifest's canonical JSON: the same for a local copy and its s3:// upload."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
