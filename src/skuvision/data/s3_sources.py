"""Originals on S3, streamed: an ``s3://`` prefix of SKU folders, one holding ``catalogue.csv``, or a CSV.

The listing is built from object keys (no image is downloaded to list it), and each build worker
reads its SKU's originals with ``get_object`` (``sku_work.read_bytes``), so an instance's local disk
holds its partition's shards, never the originals. The same rules as local input apply
(``sources.py``): ``PREFIX/<sku_id>/<image>``, or ``path,sku_id[,brand,category,split]`` rows whose
relative paths resolve against the CSV's prefix, and ``s3://`` URIs as they are.
"""

from __future__ import annotations

import io
import posixpath
import sys
from pathlib import PurePosixPath

from skuvision.data.remote import explain, is_s3, join_key, list_keys, read_object, split_s3_uri
from skuvision.data.sources import IMAGE_SUFFIXES, Listing, SourceImage, read_csv_rows
from skuvision.errors import DataError


def list_s3_sources(uri: str) -> Listing:
    """All images under ``uri``, sorted by (sku_id, path) as ``list_sources`` sorts local ones."""
    uri = uri.rstrip("/")
    bucket, prefix = split_s3_uri(uri)
    if uri.lower().endswith(".csv"):
        listing = _csv_listing(uri)
    else:
        keys = list_keys(uri)
        catalogue = join_key(prefix, "catalogue.csv")
        listing = _csv_listing(f"s3://{bucket}/{catalogue}") if catalogue in keys else _folders(bucket, prefix, keys)
    if not listing.images:
        raise DataError(
            f"--input {uri}: no images found; expected {uri}/<sku_id>/<image>.jpg or a CSV with path,sku_id"
        )
    listing.images.sort(key=lambda r: (r.sku_id, r.path))
    return listing


def _folders(bucket: str, prefix: str, keys: list[str]) -> Listing:
    images = []
    start = len(prefix) + 1 if prefix else 0
    for key in keys:
        parts = key[start:].split("/")
        if (
            len(parts) == 2
            and not parts[0].startswith(".")
            and PurePosixPath(parts[1]).suffix.lower() in IMAGE_SUFFIXES
        ):
            images.append(SourceImage(f"s3://{bucket}/{key}", sys.intern(parts[0])))  # one SKU id string for its images
    return Listing(images)


def _csv_listing(uri: str) -> Listing:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3_uri(uri)
    try:
        text = read_object(uri).decode("utf-8-sig")
    except (BotoCoreError, ClientError) as exc:
        raise explain(exc, f"--input {uri}", bucket) from None
    folder = posixpath.dirname(key)

    def resolve(raw: str) -> tuple[str, str]:
        if is_s3(raw) or raw.startswith("/"):
            return raw, raw
        path = f"s3://{bucket}/{posixpath.normpath(join_key(folder, raw))}"
        return path, path

    return read_csv_rows(io.StringIO(text, newline=""), uri, resolve)
