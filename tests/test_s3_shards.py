"""Shards on S3, against a real moto server on 127.0.0.1: build to s3://, train from s3://, clear errors."""

from __future__ import annotations

import json
import os

import pytest

from helpers import FAST_TRAIN, one_error_line, run_cli, shards_build_cli
from helpers.moto_aws import REGION, s3_json

URI = "s3://shards/catalogue/v1"


def make_bucket(aws, name: str = "shards"):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return s3


def keys(s3, bucket: str = "shards") -> list[str]:
    return sorted(
        o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in p.get("Contents", [])
    )


def build(aws, catalogue, out: str = URI, *extra: str):
    return shards_build_cli(
        "--input",
        str(catalogue),
        "--out",
        out,
        "--size",
        "64",
        "--val",
        "0.2",
        "--test",
        "0.2",
        "--workers",
        "1",
        "--quiet",
        *extra,
        env=aws.env,
    )


@pytest.mark.slow  # 10-25 s: the fast suite stays under ~10 min on 2 cores
def test_build_to_s3_then_train_from_it_through_a_local_cache(aws, tiny_catalogue, tmp_path):
    s3 = make_bucket(aws)
    result = build(aws, tiny_catalogue)
    assert result.returncode == 0, result.stderr[-3000:]
    stored = keys(s3)
    for key in ("manifest.json", "rejects.csv", "train/index.json", "val/index.json", "test/index.json"):
        assert f"catalogue/v1/{key}" in stored, stored
    assert any(k.startswith("catalogue/v1/train/chunk-") for k in stored)
    manifest = s3_json(s3, "shards", "catalogue/v1/manifest.json")
    assert sum(i["count"] for i in manifest["splits"].values()) == len(list(tiny_catalogue.glob("*/*.jpg")))

    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    result = run_cli(
        "train.py",
        f"data.root={URI}",
        f"data.cache_dir={cache}",
        f"hydra.run.dir={run_dir}",
        *FAST_TRAIN,
        "trainer.max_epochs=1",
        env=aws.env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "test/top1" in metrics and metrics["epochs"] == 1
    cached = {p.name for p in cache.rglob("chunk-*.bin")}
    assert cached, "training did not stream chunks through the local cache"
    assert cached <= {k.rsplit("/", 1)[1] for k in stored}


@pytest.mark.slow  # 10-25 s: the fast suite stays under ~10 min on 2 cores
def test_rebuild_replaces_our_objects_and_reads_the_previous_label_map_from_s3(aws, tiny_catalogue, tmp_path):
    s3 = make_bucket(aws)
    assert build(aws, tiny_catalogue).returncode == 0
    first = s3_json(s3, "shards", "catalogue/v1/manifest.json")
    s3.put_object(Bucket="shards", Key="catalogue/v1/train/chunk-0-999.bin", Body=b"stale")
    result = build(aws, tiny_catalogue, URI, "--label-map", f"{URI}/manifest.json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "catalogue/v1/train/chunk-0-999.bin" not in keys(s3)  # the earlier build's leftovers are gone
    again = s3_json(s3, "shards", "catalogue/v1/manifest.json")
    assert again["label_map"]["sku_to_index"] == first["label_map"]["sku_to_index"]
    assert again["splits"] == first["splits"]


def test_a_prefix_holding_other_data_is_refused(aws, tiny_catalogue):
    s3 = make_bucket(aws)
    s3.put_object(Bucket="shards", Key="catalogue/v1/README.txt", Body=b"not ours")
    line = one_error_line(build(aws, tiny_catalogue))
    assert "not skuvision shards" in line and "README.txt" in line
    assert keys(s3) == ["catalogue/v1/README.txt"]


def test_missing_bucket_is_one_clear_line_for_build_and_train(aws, tiny_catalogue):
    from skuvision.config.data_module import shard_data_module
    from skuvision.errors import DataError

    line = one_error_line(build(aws, tiny_catalogue, "s3://no-such-bucket/x"))
    assert "bucket 'no-such-bucket' does not exist" in line
    with pytest.raises(DataError, match="data.root=s3://no-such-bucket/x: bucket 'no-such-bucket' does not exist"):
        _ = shard_data_module("s3://no-such-bucket/x").num_classes  # what train.py prints as its one line


def test_missing_manifest_under_an_existing_bucket_says_how_to_build_it(aws):
    from skuvision.config.data_module import shard_data_module
    from skuvision.errors import DataError

    make_bucket(aws)
    with pytest.raises(
        DataError, match=r"no s3://shards/empty/manifest.json; build shards there with `skuvision shards build"
    ):
        _ = shard_data_module("s3://shards/empty").num_classes


def test_missing_credentials_is_one_clear_line(aws, tiny_catalogue, tmp_path):
    make_bucket(aws)
    env = {k: v for k, v in aws.env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env = {**{k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}, **env}
    result = shards_build_cli(
        "--input",
        str(tiny_catalogue),
        "--out",
        URI,
        "--quiet",
        env={**env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
    )
    assert "no AWS credentials found" in one_error_line(result)


@pytest.mark.parametrize("endpoint, expected", [("http://127.0.0.1:9", True), ("https://s3.example.com", False)])
def test_litdata_is_allowed_plain_http_endpoints_only(endpoint, expected, monkeypatch):
    from litdata.streaming import downloader

    from skuvision.data.remote import allow_http_endpoint_for_litdata

    fresh = {k: v for k, v in downloader._OBSTORE_CLIENT_OPTIONS.items() if k != "allow_http"}
    monkeypatch.setattr(downloader, "_OBSTORE_CLIENT_OPTIONS", fresh)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    assert allow_http_endpoint_for_litdata() is expected
    assert downloader._OBSTORE_CLIENT_OPTIONS.get("allow_http", False) is expected
