"""A partitioned build to s3:// and its merge, against a real moto server: the result equals a local one-machine build."""

from __future__ import annotations

from pathlib import Path

import pytest
from litdata import StreamingDataset

from skuvision.data.build_settings import BuildSettings
from skuvision.data.partition_merge import merge_partitions
from skuvision.data.partitions import build_partition
from skuvision.data.remote import allow_http_endpoint_for_litdata
from skuvision.data.shard_verify import verify_shards
from skuvision.data.shards import build_shards
from skuvision.errors import DataError

from helpers.moto_aws import REGION, s3_json

SETTINGS = dict(size=32, val=0.2, test=0.2, workers=1)
OUT = "s3://shards/catalogue/p2"


def make_bucket(aws, name: str = "shards"):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return s3


def keys(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="shards", Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def split_samples(root: str, cache: Path) -> dict[str, list[tuple[bytes, int]]]:
    """Each split's (image bytes, label) in order, local or s3:// (through a local cache)."""
    allow_http_endpoint_for_litdata()
    result = {}
    for split in ("train", "val", "test"):
        kwargs = {"cache_dir": str(cache / split)} if root.startswith("s3://") else {}
        dataset = StreamingDataset(f"{root}/{split}", shuffle=False, **kwargs)
        result[split] = [(bytes(s["image"]), int(s["label"])) for s in (dataset[i] for i in range(len(dataset)))]
    return result


@pytest.mark.slow  # 10-25 s: the fast suite stays under ~10 min on 2 cores
def test_two_partitions_built_to_s3_and_merged_there_equal_a_local_one_machine_build(aws, tiny_catalogue, tmp_path):
    """Small chunks and two merge writers: each writer fetches the partition chunks of its ranges from S3."""
    s3 = make_bucket(aws)
    settings = {**SETTINGS, "chunk_bytes": "8KB"}
    for k in (0, 1):
        build_partition(tiny_catalogue, OUT, BuildSettings(**settings), 2, k, progress=False)
    stored = keys(s3, "catalogue/p2/partitions/")
    for k in (0, 1):
        assert f"catalogue/p2/partitions/{k}-of-2/partial.json" in stored
        assert sum(key.startswith(f"catalogue/p2/partitions/{k}-of-2/train/chunk-") for key in stored) > 2

    merged = merge_partitions(OUT, progress=False, workers=2)
    one = build_shards(tiny_catalogue, tmp_path / "one", BuildSettings(**settings), progress=False)
    manifest = s3_json(s3, "shards", "catalogue/p2/manifest.json")
    assert manifest["label_map"] == merged["label_map"] == one["label_map"]
    assert manifest["splits"] == one["splits"] and manifest["partitions"]["count"] == 2
    for key in ("rejects.csv", "train/index.json", "val/index.json", "test/index.json"):
        assert f"catalogue/p2/{key}" in keys(s3, "catalogue/p2/")
    assert any(key.startswith("catalogue/p2/train/chunk-1-") for key in keys(s3, "catalogue/p2/train/"))  # rank 1
    assert not any(key.endswith(".index.json") for key in keys(s3, "catalogue/p2/"))  # the ranks' indexes joined
    assert split_samples(OUT, tmp_path / "cache") == split_samples(str(tmp_path / "one"), tmp_path)
    assert verify_shards(OUT, progress=False) == []


def test_an_s3_partition_without_its_marker_is_incomplete_and_a_rerun_replaces_only_it(aws, tiny_catalogue):
    s3 = make_bucket(aws)
    for k in (0, 1):
        build_partition(tiny_catalogue, OUT, BuildSettings(**SETTINGS), 2, k, progress=False)
    s3.delete_object(Bucket="shards", Key="catalogue/p2/partitions/1-of-2/partial.json")  # killed mid-upload
    with pytest.raises(DataError, match=r"partitions/1-of-2: incomplete .*--partitions 2 --partition 1`"):
        merge_partitions(OUT, progress=False)
    first = {k: s3.head_object(Bucket="shards", Key=k)["ETag"] for k in keys(s3, "catalogue/p2/partitions/0-of-2/")}
    build_partition(tiny_catalogue, OUT, BuildSettings(**SETTINGS), 2, 1, progress=False)
    assert {k: s3.head_object(Bucket="shards", Key=k)["ETag"] for k in keys(s3, "catalogue/p2/partitions/0-of-2/")} == (
        first
    )
    with pytest.raises(DataError, match="belongs to another build"):  # two builds into one prefix
        build_partition(tiny_catalogue, OUT, BuildSettings(**{**SETTINGS, "size": 48}), 2, 0, progress=False)
    assert merge_partitions(OUT, progress=False)["partitions"]["count"] == 2


def test_originals_streamed_from_s3_folders_or_a_csv_of_uris_build_like_local_files(aws, tiny_catalogue, tmp_path):
    s3 = make_bucket(aws, "originals")
    images = sorted(tiny_catalogue.glob("*/*.jpg"))
    rows = ["path,sku_id"]
    for path in images:
        key = f"folders/{path.parent.name}/{path.name}"
        s3.upload_file(str(path), "originals", key)
        rows.append(f"s3://originals/{key},{path.parent.name}")
    s3.put_object(Bucket="originals", Key=f"folders/{images[0].parent.name}/broken.jpg", Body=b"\xff\xd8 not a jpeg")
    s3.put_object(Bucket="originals", Key="list.csv", Body="\n".join(rows).encode())
    settings = BuildSettings(**SETTINGS)
    local = build_shards(tiny_catalogue, tmp_path / "local", settings, progress=False)
    expected = split_samples(str(tmp_path / "local"), tmp_path)
    for name, uri, workers in (("folders", "s3://originals/folders/", 1), ("csv", "s3://originals/list.csv", 2)):
        # workers=2 after 1: forked workers of a process that already holds an S3 client make their own
        built = build_shards(uri, tmp_path / name, BuildSettings(**{**SETTINGS, "workers": workers}), progress=False)
        classes = {k: v for k, v in built["label_map"].items() if k not in ("brands", "categories")}  # not listed
        assert classes == {k: v for k, v in local["label_map"].items() if k in classes} and classes, name
        assert built["rejects"] == (1 if name == "folders" else 0), name  # an unreadable object: a counted reject
        assert split_samples(str(tmp_path / name), tmp_path) == expected, name
