"""Where a partitioned build keeps its partitions: ``OUT/partitions/<K>-of-<P>/``, on a local/FSx path or S3.

Both stores give the same guarantee to the merge: a partition is complete only once its
``partial.json`` is there, and that file is the last thing written. Locally a partition is built
in a staging folder and renamed into place; on S3 there is no rename, so a partition is staged on
local disk (one partition, not the dataset), uploaded, and its ``partial.json`` put last; a rerun
deletes that ``partial.json`` first, so a partition killed mid-upload is never taken for complete.
A rerun touches only its own partition's keys.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from skuvision.data.remote import (
    S3ShardUploader,
    delete_keys,
    explain,
    is_s3,
    join_key,
    keys_under,
    s3_client,
    split_s3_uri,
)
from skuvision.data.shard_dirs import PARTITIONS, STAGING

PARTIAL = "partial.json"


class LocalPartitions:
    """Partitions in a local or FSx folder: staged next to their place, renamed in."""

    def __init__(self, out: str | Path):
        self.root = Path(out) / PARTITIONS

    def where(self, name: str) -> str:
        return str(self.root / name)

    def staging(self, name: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{STAGING}{name}-", dir=self.root))

    def records(self, parse: Callable[[bytes], dict] = json.loads) -> dict[str, dict]:
        """name -> partial.json of every partition renamed into place (a staging folder is not one), read by ``parse``."""
        paths = sorted(p for p in self.root.glob(f"*/{PARTIAL}") if not p.parent.name.startswith(STAGING))
        return {p.parent.name: parse(p.read_bytes()) for p in paths}

    def complete(self, name: str) -> bool:
        return (self.root / name / PARTIAL).is_file()

    def started(self, name: str) -> bool:
        """Whether a build of ``name`` left something behind without completing (killed, or still running)."""
        return any(self.root.glob(f"{STAGING}{name}-*"))

    def publish(self, staging: Path, name: str) -> None:
        shutil.rmtree(self.root / name, ignore_errors=True)  # a rerun replaces this partition only
        os.replace(staging, self.root / name)


class S3Partitions:
    """Partitions under ``s3://bucket/prefix/partitions/``: staged on local disk, ``partial.json`` uploaded last."""

    def __init__(self, out: str):
        self.uri = f"{str(out).rstrip('/')}/{PARTITIONS}"
        self.bucket, self.prefix = split_s3_uri(self.uri)
        self.client = s3_client()

    def where(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def staging(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"skuvision-{name}-"))

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """One line (missing bucket, denied access, no credentials) instead of a botocore traceback."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise explain(exc, f"--out {self.uri}", self.bucket) from None

    def _keys(self, under: str) -> list[str]:
        return keys_under(self.client, self.bucket, under, f"--out {self.uri}")

    def records(self, parse: Callable[[bytes], dict] = json.loads) -> dict[str, dict]:
        found = {}
        for key in self._keys(self.prefix):
            name, _, rest = key[len(self.prefix) + 1 :].partition("/")
            if rest == PARTIAL:
                with self._errors():
                    found[name] = parse(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        return dict(sorted(found.items()))

    def complete(self, name: str) -> bool:
        """Whether ``name``'s marker is there: one HEAD, not the partition's (large) record."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=join_key(join_key(self.prefix, name), PARTIAL))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise explain(exc, f"--out {self.uri}", self.bucket) from None
        except BotoCoreError as exc:
            raise explain(exc, f"--out {self.uri}", self.bucket) from None

    def started(self, name: str) -> bool:
        return bool(self._keys(join_key(self.prefix, name)))

    def _delete(self, keys: list[str]) -> None:
        delete_keys(self.client, self.bucket, keys, f"--out {self.uri}")

    def publish(self, staging: Path, name: str) -> None:
        """Replace partition ``name`` with ``staging``'s files: its old marker goes first, the new one last."""
        try:
            prefix = join_key(self.prefix, name)
            marker = join_key(prefix, PARTIAL)
            self._delete([marker])
            self._delete([k for k in self._keys(prefix) if k != marker])
            uploader = S3ShardUploader(self.where(name))
            try:
                uploader.upload_tree(staging, last=PARTIAL)
                uploader.finish(staging / PARTIAL, rel=PARTIAL)
            finally:
                uploader.close()
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def partition_store(out: str | Path) -> LocalPartitions | S3Partitions:
    return S3Partitions(str(out)) if is_s3(out) else LocalPartitions(out)
