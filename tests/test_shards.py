import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from skuvision.data.manifest import read_manifest
from skuvision.data.shard_verify import verify_shards
from skuvision.data.shards import BuildSettings, build_shards
from skuvision.data.splits import assign_splits, near_duplicate_groups

from helpers import run_cli, shards_build_cli


def split_of_each_image(root: Path) -> dict[str, str]:
    """content hash -> split, read back from the litdata chunks."""
    from litdata import StreamingDataset

    manifest = read_manifest(root)
    out = {}
    for split, info in manifest["splits"].items():
        if info["count"]:
            ds = StreamingDataset(str(root / info["dir"]))
            for i in range(len(ds)):
                out[ds[i]["key"]] = split
    return out


def test_manifest_counts_labels_and_settings(tiny_shards, tiny_catalogue):
    m = read_manifest(tiny_shards)
    rows = list(csv.DictReader((tiny_catalogue / "catalogue.csv").open()))
    assert m["num_classes"] == len({r["sku_id"] for r in rows})
    assert sum(i["count"] for i in m["splits"].values()) == len(rows)
    assert m["settings"]["size"] == 64 and m["settings"]["quality"] == 90
    # brand/category from catalogue.csv travel in the label map
    assert set(m["label_map"]["brands"]) == set(m["label_map"]["sku_to_index"])
    for sku, counts in m["per_sku"].items():
        assert counts.get("train", 0) and counts.get("val", 0) and counts.get("test", 0), sku
    assert verify_shards(tiny_shards, progress=False) == []


def test_images_are_downscaled_never_upscaled(tiny_catalogue, tmp_path):
    import io

    from litdata import StreamingDataset

    big = build_shards(tiny_catalogue, tmp_path / "big", BuildSettings(size=500, val=0.2, test=0.2), progress=False)
    small = build_shards(tiny_catalogue, tmp_path / "small", BuildSettings(size=40, val=0.2, test=0.2), progress=False)
    assert big["splits"]["train"]["count"] == small["splits"]["train"]["count"]
    img_big = Image.open(io.BytesIO(StreamingDataset(str(tmp_path / "big/train"))[0]["image"]))
    img_small = Image.open(io.BytesIO(StreamingDataset(str(tmp_path / "small/train"))[0]["image"]))
    assert img_big.size == (72, 72)  # originals are 72 px: kept, not blown up to 500
    assert min(img_small.size) == 40 and img_small.format == "JPEG"


def test_corrupt_zero_byte_and_text_files_are_rejected_and_build_goes_on(tiny_catalogue, tmp_path):
    src = tmp_path / "tree"
    shutil.copytree(tiny_catalogue, src, ignore=shutil.ignore_patterns("catalogue.csv"))
    sku_dirs = sorted(p for p in src.iterdir() if p.is_dir())
    good = (sku_dirs[0] / "0.jpg").read_bytes()
    (sku_dirs[0] / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (sku_dirs[1] / "empty.jpg").write_bytes(b"")
    (sku_dirs[2] / "notes.jpg").write_text("this is not a picture\n")
    out = tmp_path / "shards"
    result = shards_build_cli(
        "--input",
        str(src),
        "--out",
        str(out),
        "--size",
        "64",
        "--workers",
        "2",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    rejects = list(csv.DictReader((out / "rejects.csv").open()))
    assert sorted(Path(r["path"]).name for r in rejects) == ["empty.jpg", "notes.jpg", "truncated.jpg"]
    reasons = {Path(r["path"]).name: r["reason"] for r in rejects}
    assert reasons["empty.jpg"] == "zero bytes"
    assert reasons["notes.jpg"] == "not an image"
    assert reasons["truncated.jpg"] in ("truncated",) or reasons["truncated.jpg"].startswith("corrupt")
    m = read_manifest(out)
    assert m["rejects"] == 3
    assert sum(i["count"] for i in m["splits"].values()) == sum(1 for _ in src.rglob("*.jpg")) - 3


def test_adding_images_never_moves_existing_ones(tmp_path):
    from skuvision.data.synthetic import write_catalogue

    first = tmp_path / "first"
    write_catalogue(first, 5, 10, size=64, seed=11, progress=False)
    build_shards(first, tmp_path / "a", BuildSettings(size=64), progress=False)
    grown = tmp_path / "grown"
    write_catalogue(grown, 5, 30, size=64, seed=11, progress=False)  # same first 10 images + 20 new per SKU
    for f in first.rglob("*.jpg"):
        assert f.read_bytes() == (grown / f.relative_to(first)).read_bytes()
    build_shards(
        grown, tmp_path / "b", BuildSettings(size=64), label_map_path=str(tmp_path / "a/manifest.json"), progress=False
    )
    before, after = split_of_each_image(tmp_path / "a"), split_of_each_image(tmp_path / "b")
    assert len(after) == 150 and len(before) == 50
    moved = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert moved == {}


def test_label_map_keeps_old_indices_and_appends_new_skus(tmp_path):
    from skuvision.data.synthetic import write_catalogue

    write_catalogue(tmp_path / "old", 4, 6, size=48, seed=1, progress=False)
    write_catalogue(tmp_path / "new", 3, 6, size=48, seed=2, progress=False)
    old = build_shards(tmp_path / "old", tmp_path / "old_shards", BuildSettings(size=48), progress=False)
    # next month: the old SKUs plus three new ones, listed in one CSV
    rows = []
    for d in ("old", "new"):
        for r in csv.DictReader((tmp_path / d / "catalogue.csv").open()):
            rows.append({**r, "path": str(tmp_path / d / r["path"])})
    listing = tmp_path / "month2.csv"
    with listing.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(reversed(rows))
    result = shards_build_cli(
        "--input",
        str(listing),
        "--out",
        str(tmp_path / "m2"),
        "--size",
        "48",
        "--label-map",
        str(tmp_path / "old_shards/manifest.json"),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    new = read_manifest(tmp_path / "m2")["label_map"]["sku_to_index"]
    old_map = old["label_map"]["sku_to_index"]
    assert all(new[s] == i for s, i in old_map.items())
    assert sorted(i for s, i in new.items() if s not in old_map) == [4, 5, 6]


@pytest.mark.slow  # 10-25 s: the fast suite stays under ~10 min on 2 cores
def test_verify_fails_when_counts_do_not_match(tiny_shards, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_shards, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["splits"]["train"]["count"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("-m", "skuvision.cli", "shards", "verify", str(copy), "--quiet")
    assert result.returncode == 1
    assert "train:" in result.stderr and "manifest says" in result.stderr
    ok = run_cli("-m", "skuvision.cli", "shards", "verify", str(tiny_shards), "--quiet")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.slow  # 10-25 s: the fast suite stays under ~10 min on 2 cores
def test_bad_inputs_fail_with_one_clear_line(tmp_path):
    missing = run_cli(
        "-m", "skuvision.cli", "shards", "build", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o")
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "nope" in missing.stderr
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,label\na.jpg,x\n")
    r = run_cli("-m", "skuvision.cli", "shards", "build", "--input", str(bad_csv), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "missing column(s) path, sku_id" in r.stderr
    r = run_cli("-m", "skuvision.cli", "shards", "verify", str(tmp_path))
    assert r.returncode == 2 and "no shard manifest" in r.stderr


def test_split_assignment_keeps_groups_together_and_covers_every_split():
    hashes = [f"{i:040x}" for i in range(1, 40)]
    hashes = [h[::-1] for h in hashes]  # spread over [0, 1)
    groups = [[0, 1, 2]] + [[i] for i in range(3, len(hashes))]
    splits = assign_splits(hashes, groups, 0.1, 0.1).splits
    assert len({splits[0], splits[1], splits[2]}) == 1
    assert {s: splits.count(s) for s in ("train", "val", "test")} == {"train": 31, "val": 4, "test": 4}
    # three singletons: coverage gives one of each, by hash order, without pins
    first = assign_splits(["f" * 40, "e" * 40, "d" * 40], [[0], [1], [2]], 0.1, 0.1)
    assert first.splits == ["train", "val", "test"] and first.new_pins == {}
    # honoured later even when more images arrive, all below them in hash order: the recorded cuts hold
    more = ["f" * 40, "e" * 40, "d" * 40] + [c * 40 for c in "abc98765"]
    again = assign_splits(more, [[i] for i in range(len(more))], 0.1, 0.1, cuts=first.cuts)
    assert again.splits[:3] == first.splits
    # without the earlier cuts the same images would move: the cuts are what keeps them
    assert assign_splits(more, [[i] for i in range(len(more))], 0.1, 0.1).splits[:3] != first.splits


def test_near_duplicate_grouping_is_by_hamming_distance():
    groups = near_duplicate_groups([0b0, 0b1, 0b111 << 40, 0xFFFF], max_distance=2)[0]
    assert sorted(map(sorted, groups)) == [[0, 1], [2], [3]]
    assert len(near_duplicate_groups([0, 1], max_distance=-1)[0]) == 2


def test_exif_orientation_is_applied_so_phone_photos_are_stored_upright(tmp_path):
    """A phone stores the sensor's pixels plus an Orientation tag; the shard must hold the photo upright."""
    import io

    from litdata import StreamingDataset

    upright = Image.new("RGB", (60, 90), (200, 30, 30))  # portrait: red top half, blue bottom half
    upright.paste((30, 30, 200), (0, 45, 60, 90))
    sensor = upright.transpose(Image.Transpose.ROTATE_90)  # landscape pixels as the sensor read them
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    (tmp_path / "in" / "sku-a").mkdir(parents=True)
    photo = tmp_path / "in" / "sku-a" / "phone.jpg"
    sensor.save(photo, "JPEG", quality=95, exif=exif)
    assert Image.open(photo).size == (90, 60)  # stored sideways, as a phone writes it
    build_shards(tmp_path / "in", tmp_path / "out", BuildSettings(size=48), progress=False)
    stored = Image.open(io.BytesIO(StreamingDataset(str(tmp_path / "out/train"))[0]["image"])).convert("RGB")
    assert stored.size == (48, 72)  # upright portrait, short side 48
    red, blue = stored.getpixel((24, 8)), stored.getpixel((24, 64))
    assert red[0] > 150 and red[2] < 100 and blue[2] > 150 and blue[0] < 100, (red, blue)
    # the split still follows the original file's bytes
    assert split_of_each_image(tmp_path / "out") == {hashlib.sha1(photo.read_bytes()).hexdigest(): "train"}


@pytest.mark.slow  # 10-25 s: the fast suite stays under ~10 min on 2 cores
def test_a_build_that_runs_out_of_room_says_so_in_one_line_and_keeps_the_earlier_build(tiny_catalogue, tmp_path):
    """The write fails as on a full disk (a file size limit with SIGXFSZ ignored gives EFBIG, as ENOSPC would)."""
    import resource
    import signal
    import subprocess
    import sys

    from skuvision.data.shard_verify import verify_shards

    from helpers import ROOT

    out = tmp_path / "shards"
    first = shards_build_cli("--input", str(tiny_catalogue), "--out", str(out), "--size", "64")
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def no_room() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    command = [sys.executable, "-m", "skuvision.cli", "shards", "build", "--input", str(tiny_catalogue)]
    result = subprocess.run(
        [*command, "--out", str(out), "--size", "128"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=no_room,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("skuvision: error:")]
    assert f"--out {out}: shards not written (File too large)" in line, line
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the earlier build, byte for byte, and no staging dir left
    assert verify_shards(out, progress=False) == []
