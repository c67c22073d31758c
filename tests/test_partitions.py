"""A partitioned shard build (issue 20): the merged result does not depend on how many partitions built it."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from litdata import StreamingDataset

from skuvision.cli import main
from skuvision.data.build_settings import BuildSettings
from skuvision.data.partition_merge import merge_partitions
from skuvision.data.partitions import assign_partitions, build_partition
from skuvision.data.shard_verify import verify_shards
from skuvision.data.shards import build_shards, read_listing
from skuvision.data.synthetic import write_catalogue
from skuvision.errors import DataError

SETTINGS = dict(size=32, val=0.2, test=0.2)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    """12 SKUs of uneven size, plus what the build must handle: cross-SKU copies, a corrupt file, an empty SKU."""
    root = tmp_path_factory.mktemp("partitions")
    write_catalogue(root / "images", 12, 6, size=64, progress=False)
    with (root / "images" / "catalogue.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    skus = sorted({r["sku_id"] for r in rows})
    by_sku = {s: [r for r in rows if r["sku_id"] == s] for s in skus}
    extra = root / "extra"
    extra.mkdir()
    for n, (source, target) in enumerate([(skus[0], skus[7]), (skus[2], skus[11]), (skus[5], skus[1])]):
        copy = extra / f"copy{n}.jpg"  # the same bytes under a second SKU: a label conflict
        shutil.copy(root / "images" / by_sku[source][0]["path"], copy)
        rows.append({**by_sku[target][0], "path": str(copy)})
    (extra / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    rows.append({**by_sku[skus[3]][0], "path": str(extra / "broken.jpg")})
    (extra / "empty.jpg").write_bytes(b"")
    rows.append({"path": str(extra / "empty.jpg"), "sku_id": "zz-empty", "brand": "b", "category": "c"})
    for row in rows:
        if not Path(row["path"]).is_absolute():
            row["path"] = str(root / "images" / row["path"])
    with (root / "listing.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "sku_id", "brand", "category"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return root / "listing.csv"


def partitioned(listing: Path, out: Path, partitions: int) -> dict:
    for k in range(partitions):
        build_partition(listing, out, BuildSettings(**SETTINGS), partitions, k, progress=False)
    return merge_partitions(out, progress=False)


def samples(out: Path) -> dict[str, list[tuple[bytes, int, str]]]:
    result = {}
    for split in ("train", "val", "test"):
        dataset = StreamingDataset(str(out / split), shuffle=False)
        result[split] = [
            (bytes(s["image"]), int(s["label"]), s["key"]) for s in (dataset[i] for i in range(len(dataset)))
        ]
    return result


def without_timing(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("build_seconds", "partitions")}


def test_the_merged_build_does_not_depend_on_the_number_of_partitions(catalogue, tmp_path):
    reference = build_shards(catalogue, tmp_path / "one-machine", BuildSettings(**SETTINGS), progress=False)
    assert len(reference["label_conflicts"]) == 3 and reference["empty_skus"] == ["zz-empty"]
    owner = assign_partitions(read_listing(catalogue), 4)
    assert any(owner[c["sku_id"]] != owner[c["kept_sku"]] for c in reference["label_conflicts"])  # across partitions
    expected = samples(tmp_path / "one-machine")
    for p in (1, 3, 4):
        out = tmp_path / f"p{p}"
        merged = partitioned(catalogue, out, p)
        assert without_timing(merged) == without_timing(reference), p  # label map, splits per SKU, conflicts, pins
        assert merged["partitions"]["count"] == p
        assert samples(out) == expected, p  # the same sample bytes, labels and keys per split, in the same order
        assert (out / "rejects.csv").read_text() == (tmp_path / "one-machine" / "rejects.csv").read_text()
        assert verify_shards(out, progress=False) == []


def test_several_merge_writers_keep_every_split_in_listing_order(catalogue, tmp_path):
    """Small chunks, so a writer's range starts and ends inside partition chunks; only the chunk layout may differ."""
    settings = BuildSettings(**SETTINGS, chunk_bytes="16KB")
    reference = build_shards(catalogue, tmp_path / "one-machine", settings, progress=False)
    for k in range(3):
        build_partition(catalogue, tmp_path / "p3", settings, 3, k, progress=False)
    merged = merge_partitions(tmp_path / "p3", progress=False, workers=2)
    layout = ("chunk_sha256",)
    assert {k: v for k, v in without_timing(merged).items() if k not in layout} == {
        k: v for k, v in without_timing(reference).items() if k not in layout
    }
    assert samples(tmp_path / "p3") == samples(tmp_path / "one-machine")
    train = sorted(p.name for p in (tmp_path / "p3" / "train").glob("chunk-*.bin"))
    assert len({name.split("-")[1] for name in train}) > 1  # written by several ranks
    assert not list((tmp_path / "p3" / "train").glob("*.index.json"))  # joined into index.json
    assert set(merged["chunk_sha256"]["train"]) == set(train)
    assert verify_shards(tmp_path / "p3", progress=False) == []


def test_partitions_are_whole_skus_balanced_by_images(catalogue):
    listing = read_listing(catalogue)
    owner = assign_partitions(listing, 3)
    load = [0, 0, 0]
    for src in listing.images:
        load[owner[src.sku_id]] += 1
    assert max(load) - min(load) <= 7  # at most one SKU's images apart (6 images + a copy)
    assert assign_partitions(listing, 3) == owner  # deterministic


def test_a_missing_killed_or_foreign_partition_is_named_with_the_command_that_rebuilds_it(catalogue, tmp_path, capsys):
    out = tmp_path / "out"
    for k in (0, 1):
        build_partition(catalogue, out, BuildSettings(**SETTINGS), 3, k, progress=False)
    with pytest.raises(DataError, match=r"2-of-3: missing; build it with `skuvision shards build .* --partition 2`"):
        merge_partitions(out, progress=False)
    (out / "partitions" / ".building-2-of-3-x1").mkdir()  # what a partition killed mid-write leaves
    with pytest.raises(SystemExit) as exit_info:
        main(["shards", "merge", str(out), "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2-of-3: incomplete" in err[0] and "--partitions 3 --partition 2" in err[0]
    assert not (out / "manifest.json").exists()

    with pytest.raises(DataError, match="belongs to another build"):  # two builds into one --out
        build_partition(catalogue, out, BuildSettings(size=48, val=0.2, test=0.2), 3, 2, progress=False)
    other = tmp_path / "other"
    build_partition(catalogue, other, BuildSettings(size=48, val=0.2, test=0.2), 3, 2, progress=False)
    shutil.copytree(other / "partitions" / "2-of-3", out / "partitions" / "2-of-3")
    with pytest.raises(DataError, match=r"2-of-3: a partition of another build.*--partition 2"):
        merge_partitions(out, progress=False)

    shutil.rmtree(out / "partitions" / "2-of-3")
    build_partition(catalogue, out, BuildSettings(**SETTINGS), 3, 2, progress=False)  # rerun the one partition
    manifest = merge_partitions(out, progress=False)
    assert json.loads((out / "manifest.json").read_text())["splits"] == manifest["splits"]
    assert verify_shards(out, progress=False) == []


def test_partitions_without_partition_is_one_line(catalogue, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["shards", "build", "--input", str(catalogue), "--out", str(tmp_path / "out"), "--partitions", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "skuvision: error: --partitions P and --partition K go together: P partitions, and which one (0..P-1) to build"
    ]
    with pytest.raises(DataError, match="--partition 3 --partitions 3: need 0 <= K < P"):
        build_partition(catalogue, tmp_path / "out", BuildSettings(**SETTINGS), 3, 3, progress=False)


def test_a_partitioned_delta_build_matches_the_one_machine_delta(catalogue, tmp_path):
    """--label-map: the base's classes and splits carry into every partition; the merge records the same base."""
    base = tmp_path / "base"
    build_shards(catalogue, base, BuildSettings(**SETTINGS), progress=False)
    label_map = str(base / "manifest.json")
    one = build_shards(catalogue, tmp_path / "one", BuildSettings(**SETTINGS), label_map_path=label_map, progress=False)
    for k in range(2):
        build_partition(catalogue, tmp_path / "p2", BuildSettings(**SETTINGS), 2, k, label_map, progress=False)
    merged = merge_partitions(tmp_path / "p2", progress=False)
    assert merged["base"]["path"] == one["base"]["path"] == str(base.resolve())
    assert without_timing(merged) == without_timing(one)
    assert samples(tmp_path / "p2") == samples(tmp_path / "one")


def test_instances_of_a_processing_job_build_the_partitions_of_their_rank(catalogue, tmp_path):
    """A local rehearsal: two processes, each with its own SageMaker-style resourceconfig.json, build
    concurrently into one --out; the merge gives the one-machine result."""
    hosts = ["algo-2", "algo-1"]  # SageMaker's order is not promised: ranks come from the sorted names
    commands = []
    for host in hosts:
        config = tmp_path / f"{host}.json"
        config.write_text(json.dumps({"current_host": host, "hosts": hosts}))
        commands.append(
            [sys.executable, "-m", "skuvision.cli", "shards", "build", "--input", str(catalogue), "--out",
             str(tmp_path / "out"), "--size", "32", "--val", "0.2", "--test", "0.2", "--workers", "1", "--quiet",
             "--partitions", "4", "--partition", "host", "--resource-config", str(config)]
        )  # fmt: skip
    running = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    outputs = [p.communicate(timeout=600) for p in running]
    assert [p.returncode for p in running] == [0, 0], outputs
    assert "0-of-4" in outputs[1][0] and "2-of-4" in outputs[1][0]  # algo-1: rank 0
    assert "1-of-4" in outputs[0][0] and "3-of-4" in outputs[0][0]
    merged = merge_partitions(tmp_path / "out", progress=False)
    one = build_shards(catalogue, tmp_path / "one", BuildSettings(**SETTINGS), progress=False)
    assert without_timing(merged) == without_timing(one)
    assert samples(tmp_path / "out") == samples(tmp_path / "one")
