"""Splits that keep their fractions: no chained near-duplicate groups, user-given splits, loud failures.

The regression case is a studio catalogue (one rig shot per SKU, slightly varied): all images of a
SKU look alike, and union-find grouping chained every SKU into one group that went whole to test.
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections import Counter
from pathlib import Path

import pytest

from skuvision.data.manifest import read_manifest
from skuvision.data.shard_verify import verify_shards
from skuvision.data.shards import BuildSettings, build_shards
from skuvision.data.splits import SPLITS, assign_splits, near_duplicate_groups

from helpers import run_cli, shards_build_cli


def split_of_each_image(root: Path) -> dict[str, str]:
    from litdata import StreamingDataset

    out = {}
    for split, info in read_manifest(root)["splits"].items():
        if info["count"]:
            ds = StreamingDataset(str(root / info["dir"]))
            out.update({ds[i]["key"]: split for i in range(len(ds))})
    return out


def sha1(path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def off_by(counts, requested: dict[str, float]) -> float:
    n = sum(counts.get(s, 0) for s in SPLITS)
    return max(abs(counts.get(s, 0) / n - requested[s]) for s in SPLITS)


def test_studio_catalogue_keeps_requested_fractions(tmp_path):
    """Fails with union-find grouping: there every SKU became one group and went whole to test."""
    from skuvision.data.synthetic import write_catalogue

    write_catalogue(tmp_path / "studio", 4, 60, size=64, seed=13, views="studio", progress=False)
    m = build_shards(tmp_path / "studio", tmp_path / "shards", BuildSettings(size=64), progress=False)
    requested = {"train": 0.8, "val": 0.1, "test": 0.1}
    totals = {s: m["splits"][s]["count"] for s in SPLITS}
    assert off_by(totals, requested) <= 0.02, totals
    for sku, counts in m["per_sku"].items():
        assert off_by(counts, requested) <= 0.05, (sku, counts)
    assert m["split_fractions"]["requested"] == requested
    assert m["split_fractions"]["achieved"] == {s: totals[s] / 240 for s in SPLITS}
    assert m["split_warnings"] == []
    # the views really are alike: the builder had to stop grouping by 8 bits on some SKUs
    assert m["dedup_distance_lowered"]


def test_groups_never_chain_and_every_pair_is_within_the_distance():
    chain = [(1 << k) - 1 for k in range(12)]  # each hash 1 bit from the next, 11 bits end to end
    groups = near_duplicate_groups(chain, 1)[0]
    assert max(len(g) for g in groups) == 2
    rng = random.Random(3)
    hashes = [rng.getrandbits(64) for _ in range(40)]
    hashes += [h ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64)) for h in hashes[:15]]  # 15 twins
    groups = near_duplicate_groups(hashes, 8)[0]
    for g in groups:
        assert all((hashes[a] ^ hashes[b]).bit_count() <= 8 for a in g for b in g)
    assert sum(len(g) == 2 for g in groups) == 15  # each twin found, with its own original


def test_fractions_hold_with_groups_and_no_image_moves_when_more_arrive():
    rng = random.Random(5)
    hashes = [f"{rng.getrandbits(160):040x}" for _ in range(300)]
    groups = [[i, i + 1, i + 2] for i in range(0, 60, 3)] + [[i] for i in range(60, 200)]
    first = assign_splits(hashes[:200], groups, 0.1, 0.1)
    assert Counter(first.splits) == {"train": 160, "val": 20, "test": 20}
    assert all(len({first.splits[i] for i in g}) == 1 for g in groups)
    grown = groups + [[i] for i in range(200, 300)]
    later = assign_splits(hashes, grown, 0.1, 0.1, pinned=first.new_pins, cuts=first.cuts)
    assert later.splits[:200] == first.splits  # nothing that existed moved
    assert off_by(Counter(later.splits), {"train": 0.8, "val": 0.1, "test": 0.1}) <= 0.05


def rows_of(catalogue: Path) -> list[dict]:
    return list(csv.DictReader((catalogue / "catalogue.csv").open()))


def _listing(catalogue: Path, path: Path, split_of) -> Path:
    rows = list(csv.DictReader((catalogue / "catalogue.csv").open()))
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*rows[0], "split"])
        w.writeheader()
        for k, r in enumerate(rows):
            w.writerow({**r, "path": str(catalogue / r["path"]), "split": split_of(k, r)})
    return path


def test_csv_split_column_is_honoured_and_empty_rows_are_split_by_the_build(tiny_catalogue, tmp_path):
    skus = sorted({r["sku_id"] for r in csv.DictReader((tiny_catalogue / "catalogue.csv").open())})
    given = {0: "test", 1: "Val", 2: "train", 5: "test"}
    only_test = skus[-1]  # one SKU's images all given as test: it must be named as untrainable

    listing = _listing(
        tiny_catalogue, tmp_path / "listing.csv", lambda k, r: "test" if r["sku_id"] == only_test else given.get(k, "")
    )
    copy = tmp_path / "copy.jpg"  # a re-encoded copy of row 0 (given test), given train: leakage to report
    from PIL import Image

    Image.open(tiny_catalogue / rows_of(tiny_catalogue)[0]["path"]).save(copy, "JPEG", quality=80)
    with listing.open("a", newline="") as fh:
        csv.writer(fh).writerow([str(copy), rows_of(tiny_catalogue)[0]["sku_id"], "", "", "train"])
    rows = list(csv.DictReader(listing.open()))
    result = shards_build_cli(
        "--input",
        str(listing),
        "--out",
        str(tmp_path / "out"),
        "--size",
        "48",
        "--val",
        "0.2",
        "--test",
        "0.2",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    split = split_of_each_image(tmp_path / "out")
    for r in rows:
        if r["split"]:
            assert split[sha1(r["path"])] == r["split"].lower(), r
    free = [split[sha1(r["path"])] for r in rows if not r["split"]]
    assert set(free) == set(SPLITS)  # the rest were split by the build
    m = read_manifest(tmp_path / "out")
    n_given = sum(1 for r in rows if r["split"])
    assert sum(m["split_fractions"]["given"].values()) == n_given
    assert m["split_fractions"]["images_split"] == len(rows) - n_given
    assert "achieved train" in result.stdout and "requested train 0.600" in result.stdout
    assert f"have no training images, so the model cannot learn them: {only_test}" in result.stderr
    assert "1 near-duplicate group(s) span the splits given in the CSV" in result.stderr and str(copy) in result.stderr


def test_unknown_split_value_is_one_clear_error_naming_the_row(tiny_catalogue, tmp_path):
    listing = _listing(tiny_catalogue, tmp_path / "bad.csv", lambda k, r: "validation" if k == 1 else "")
    result = run_cli("-m", "skuvision.cli", "shards", "build", "--input", str(listing), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    err = result.stderr.strip()
    assert err.count("\n") == 0, err
    assert f"{listing}:3: split 'validation' is not one of train, val, test" in err
    assert not (tmp_path / "o").exists()


def test_no_training_images_is_an_error_and_the_previous_build_survives(tiny_catalogue, tmp_path):
    out = tmp_path / "out"
    build_shards(tiny_catalogue, out, BuildSettings(size=48), progress=False)
    before = (out / "manifest.json").read_bytes()
    bad = tmp_path / "empty.jpg"
    bad.write_bytes(b"")  # the only training row is rejected as corrupt
    listing = _listing(tiny_catalogue, tmp_path / "l.csv", lambda k, r: "val" if k % 2 else "test")
    with listing.open("a", newline="") as fh:
        csv.writer(fh).writerow([str(bad), "SKU-x", "", "", "train"])
    result = run_cli(
        "-m", "skuvision.cli", "shards", "build", "--input", str(listing), "--out", str(out), "--size", "48", "--quiet"
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no training images" in result.stderr
    assert (out / "manifest.json").read_bytes() == before
    assert verify_shards(out, progress=False) == []
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "rejects.csv", "test", "train", "val"]


def test_a_build_off_its_fractions_warns_naming_the_worst_skus(tmp_path):
    from skuvision.data.split_report import split_report

    free = {"A": Counter(train=90), "B": Counter(train=40, val=5, test=5), "C": Counter(train=80, val=10, test=10)}
    fractions, warnings = split_report({k: dict(v) for k, v in free.items()}, free, 0.1, 0.1)
    assert fractions["achieved"]["train"] == pytest.approx(210 / 240, abs=1e-4)
    assert len(warnings) == 2
    assert "more than 2 points off" in warnings[0] and "worst SKUs: A (train 90 val 0 test 0)" in warnings[0]
    assert "1 SKU(s) with >= 50 images" in warnings[1] and "B" not in warnings[1]  # B has < 50 images
