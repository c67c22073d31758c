"""Shards on S3: manifest reads, upload during the build, and one-line errors for the usual mistakes.

Endpoint, region and credentials come from the usual AWS settings (``AWS_PROFILE``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``
for S3-compatible stores) through boto3's default chain -- the same chain litdata's
S3 client uses when training streams the shards, so building and training agree.

Why the builder uploads with boto3 instead of litdata's ``optimize(output_dir="s3://")``:
the builder writes with litdata's ``BinaryWriter`` directly (one writer per split,
fed in catalogue order by the per-SKU workers), which has no uploader of its own.
Each chunk is uploaded by a thread pool as soon as the writer closes it and then
deleted locally, so the local disk holds a few chunks, not the dataset, and the
upload overlaps the build. The manifest goes up last: a prefix with a
``manifest.json`` is a complete build.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from skuvision.errors import DataError

# Deferred on purpose: boto3/botocore are slow to import and only S3 paths need them.

OURS = ("train", "val", "test")  # top-level folders a build writes, next to manifest.json and rejects.csv
OUR_FILES = ("manifest.json", "rejects.csv")
PARTITIONS = (
    "partitions"  # a partitioned build's parts: kept when the build over them is replaced (the merge reads them)
)


def is_s3(uri: str | os.PathLike | None) -> bool:
    return str(uri or "").startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not is_s3(uri):
        raise DataError(f"{uri}: not an s3:// URI")
    bucket, _, key = str(uri)[5:].partition("/")
    if not bucket:
        raise DataError(f"{uri}: no bucket name; use s3://BUCKET/PREFIX")
    return bucket, key.strip("/")


def join_key(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


def s3_client(connections: int = 10):
    import boto3
    from botocore.config import Config

    # standard retry mode: throttling (SlowDown, 503) and transient errors are retried with backoff
    return boto3.client(
        "s3", config=Config(max_pool_connections=connections, retries={"mode": "standard", "max_attempts": 8})
    )


_READERS: dict[int, object] = {}  # pid -> client: a forked build worker must not share its parent's connections


def read_object(uri: str) -> bytes:
    """The bytes of one S3 object (an original streamed by a build worker); botocore errors propagate."""
    client = _READERS.get(os.getpid())
    if client is None:
        _READERS.clear()
        client = _READERS[os.getpid()] = s3_client()
    bucket, key = split_s3_uri(uri)
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def keys_under(client, bucket: str, prefix: str, what: str) -> list[str]:
    """Every key in the folder ``prefix`` ("" = the whole bucket), as S3 lists them; an AWS error is one
    line naming ``what`` (the option and URI the user gave)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "")
        return [o["Key"] for page in pages for o in page.get("Contents", [])]
    except (BotoCoreError, ClientError) as exc:
        raise explain(exc, what, bucket) from None


def delete_keys(client, bucket: str, keys: list[str], what: str, hint: str = "") -> None:
    """Delete ``keys`` in order, 1,000 per request (S3's limit); the first key S3 refuses, or an AWS
    error, is one line naming ``what`` (then ``hint``, what to do)."""
    from botocore.exceptions import BotoCoreError, ClientError

    for start in range(0, len(keys), 1000):
        try:
            reply = client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]]}
            )
        except (BotoCoreError, ClientError) as exc:
            raise explain(exc, what, bucket) from None
        if reply.get("Errors"):
            err = reply["Errors"][0]
            raise DataError(f"{what}: cannot delete s3://{bucket}/{err.get('Key')} ({err.get('Code')}){hint}")


def list_keys(uri: str) -> list[str]:
    """Every key under ``uri`` (a prefix), sorted; one line for a missing bucket or denied access."""
    bucket, prefix = split_s3_uri(uri)
    return sorted(keys_under(s3_client(), bucket, prefix, f"--input {uri}"))


def explain(exc: Exception, what: str, bucket: str) -> DataError:
    """One actionable line for a boto3/botocore failure while doing ``what``."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError

    if isinstance(exc, NoCredentialsError):
        return DataError(
            f"{what}: no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (plus AWS_ENDPOINT_URL for an S3-compatible store)"
        )
    if isinstance(exc, NoRegionError):
        return DataError(f"{what}: no AWS region configured; set AWS_REGION (or AWS_DEFAULT_REGION)")
    if isinstance(exc, EndpointConnectionError):
        return DataError(f"{what}: cannot reach the S3 endpoint ({exc}); check AWS_ENDPOINT_URL and the network")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket", "404"):
            return DataError(
                f"{what}: bucket '{bucket}' does not exist; create it (aws s3 mb s3://{bucket}) or fix the name"
            )
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
            return DataError(
                f"{what}: access denied to bucket '{bucket}' ({code}); check the credentials and the bucket policy"
            )
        return DataError(f"{what}: S3 error {code or exc}")
    return DataError(f"{what}: {exc}")


def check_bucket(client, uri: str) -> None:
    """Fail fast, before any work, when the bucket is missing or the credentials do not work."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _ = split_s3_uri(uri)
    try:
        client.head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as exc:
        raise explain(exc, uri, bucket) from None


def allow_http_endpoint_for_litdata() -> bool:
    """Let litdata's fast chunk path reach a plain-http S3 endpoint (MinIO, moto, on-prem gateways).

    litdata 0.2.7x fetches chunks through obstore, built from the boto3 client's endpoint but
    without object_store's ``allow_http``, so every GET from an ``http://`` endpoint fails with
    "BadScheme" (boto3 itself is fine). When AWS_ENDPOINT_URL(_S3) is http://, add the option
    to litdata's obstore client options; https endpoints (AWS itself) are left untouched.
    Returns whether the option was set. Idempotent; a litdata without that table is left alone.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    if not endpoint.startswith("http://"):
        return False
    try:
        from litdata.streaming import downloader
    except ImportError:  # pragma: no cover
        return False
    options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
    if not isinstance(options, dict):
        return False
    options["allow_http"] = True
    return True


def read_remote_manifest(root: str) -> dict:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_uri(root)
    key = join_key(prefix, "manifest.json")
    client = s3_client()
    what = f"data.root={root}"
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            check_bucket(client, root)  # a missing bucket says so, not "no manifest"
            raise DataError(
                f"{what}: no s3://{bucket}/{key}; build shards there with "
                f"`skuvision shards build --input ... --out {root}`"
            ) from None
        raise explain(exc, what, bucket) from None
    except BotoCoreError as exc:
        raise explain(exc, what, bucket) from None
    return json.loads(body)


def read_json(uri: str) -> dict:
    """One JSON object from S3 (e.g. a previous build's manifest for --label-map)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3_uri(uri)
    try:
        body = s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise DataError(f"{uri}: no such object; pass the manifest.json of an earlier build") from None
        raise explain(exc, uri, bucket) from None
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise DataError(f"{uri}: not valid JSON ({exc.msg}); pass a label_map.json or manifest.json") from None


class S3ShardUploader:
    """Uploads a build's files under ``s3://bucket/prefix`` while the build runs."""

    def __init__(self, uri: str, threads: int = 8):
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = split_s3_uri(self.uri)
        self.client = s3_client(connections=threads + 2)
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="s3-upload")
        self.pending: list[Future] = []
        self.submitted: set[str] = set()
        self.uploaded = 0

    def prepare(self) -> None:
        """Check bucket and credentials, refuse foreign objects, clear an earlier build of ours."""
        check_bucket(self.client, self.uri)
        base = f"{self.prefix}/" if self.prefix else ""
        keys = keys_under(self.client, self.bucket, self.prefix, f"--out {self.uri}")
        foreign = [k for k in keys if not self._ours(k[len(base) :])]
        if foreign:
            raise DataError(
                f"--out {self.uri}: holds objects that are not skuvision shards (e.g. s3://{self.bucket}/"
                f"{foreign[0]}); choose an empty prefix"
            )
        keys = [k for k in keys if k[len(base) :].split("/", 1)[0] != PARTITIONS]
        manifest = join_key(self.prefix, "manifest.json")  # first: a half-replaced build never looks complete
        keys.sort(key=lambda k: k != manifest)
        delete_keys(
            self.client,
            self.bucket,
            keys,
            f"--out {self.uri}: clearing the earlier build",
            "; check delete permission on the prefix",
        )

    @staticmethod
    def _ours(rel: str) -> bool:
        return rel in OUR_FILES or rel.split("/", 1)[0] in (*OURS, PARTITIONS)

    def _put(self, path: Path, rel: str, remove: bool) -> None:
        from boto3.s3.transfer import TransferConfig

        # one stream per file; the parallelism is across files (our pool), within the connection pool
        self.client.upload_file(
            str(path), self.bucket, join_key(self.prefix, rel), Config=TransferConfig(use_threads=False)
        )
        self.uploaded += 1
        if remove:
            path.unlink()

    def submit(self, path: str | Path, rel: str, remove: bool = True) -> None:
        """Upload ``path`` as ``prefix/rel`` in the background (and delete it locally once up)."""
        self.submitted.add(rel)
        self.pending.append(self.pool.submit(self._put, Path(path), rel, remove))
        if len(self.pending) > 2 * self.threads:  # backpressure: local disk holds a few chunks, not the dataset
            self._drain(keep=self.threads)

    def upload_tree(self, local_root: Path, remove: bool = True, last: str = "manifest.json") -> None:
        """Everything still under ``local_root`` except ``last`` (the manifest), which :meth:`finish` sends last."""
        for path in sorted(p for p in Path(local_root).rglob("*") if p.is_file()):
            rel = path.relative_to(local_root).as_posix()
            if rel != last and rel not in self.submitted:
                self.submit(path, rel, remove)

    def _drain(self, keep: int = 0) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        while len(self.pending) > keep:
            try:
                self.pending.pop(0).result()
            except (BotoCoreError, ClientError) as exc:
                raise explain(exc, f"--out {self.uri}: upload", self.bucket) from None

    def wait(self) -> None:
        """Until every submitted upload is done (a merge writer's chunks, before it reports its range written)."""
        self._drain()

    def finish(self, manifest: Path, rel: str = "manifest.json") -> None:
        """Wait for every upload, then publish the manifest (or a partition's completion marker)."""
        self._drain()
        self._put(Path(manifest), rel, remove=False)

    def close(self) -> None:
        """Stop: uploads not yet started are dropped (after a failure no manifest is written)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
