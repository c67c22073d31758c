"""The long tail of input files a shard build meets (issue 14, item 6), one case each.

Every case ends in a counted skip in rejects.csv with an exact reason, an accepted image whose
stored pixels are checked, or exactly one ``skuvision: error:`` line with exit 2 and no traceback;
and whatever was built stays valid (manifest counts = shard samples, ``verify_shards`` clean).
The README's Reliability section lists each case with its outcome.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skuvision.data.labels import LabelMap
from skuvision.data.manifest import read_manifest
from skuvision.data.shard_verify import verify_shards
from skuvision.data.shards import BuildSettings, build_shards

from helpers import QUIET, TINY_MODEL, one_error_line, run_cli, shards_build_cli

SIZE = 32  # --size of every build here: small and fast


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def photo(seed: int, size: int = 48) -> bytes:
    """A distinct, valid JPEG (noise: no two are near-duplicates)."""
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)), "JPEG", quality=90)


def good_tree(root: Path, skus=("a", "b"), per_sku: int = 3, seed: int = 0) -> Path:
    for s, sku in enumerate(skus):
        (root / sku).mkdir(parents=True, exist_ok=True)
        for i in range(per_sku):
            (root / sku / f"{i}.jpg").write_bytes(photo(seed + 100 * s + i))
    return root


def build(src: Path, out: Path, **kwargs) -> dict:
    settings = BuildSettings(
        size=SIZE, val=kwargs.pop("val", 0.0), test=kwargs.pop("test", 0.0), workers=kwargs.pop("workers", 1)
    )
    return build_shards(src, out, settings, progress=False, **kwargs)


def rejects_of(out: Path) -> dict[str, str]:
    with (out / "rejects.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_path = {r["path"]: r["reason"] for r in rows}
    assert len(by_path) == len(rows), "a file rejected twice"
    return by_path


def assert_valid_build(out: Path) -> dict:
    """The build on disk is whole: manifest counts match the shards, and every sample decodes."""
    m = read_manifest(out)
    assert sum(sum(c.values()) for c in m["per_sku"].values()) == sum(i["count"] for i in m["splits"].values())
    assert m["rejects"] == len(rejects_of(out))
    assert set(m["per_sku"]) <= set(m["label_map"]["sku_to_index"])
    assert verify_shards(out, progress=False) == []
    return m


def stored_samples(out: Path) -> dict[str, tuple[int, Image.Image]]:
    """content hash -> (label, stored RGB image), read back from the litdata chunks."""
    from litdata import StreamingDataset

    found = {}
    for info in read_manifest(out)["splits"].values():
        if info["count"]:
            ds = StreamingDataset(str(out / info["dir"]))
            for i in range(len(ds)):
                sample = ds[i]
                found[sample["key"]] = (sample["label"], Image.open(io.BytesIO(sample["image"])).convert("RGB"))
    return found


# -- odd image files: made here, each dropped into SKU "a" of a good tree ---------------------------


def png_bomb(width: int, height: int) -> bytes:
    """A real decompression bomb: a valid 1-bit PNG of width x height, a few KB compressed.

    Rows are compressed one at a time, so making it never holds the pixels either."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z, row, idat = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8), []
    for _ in range(height):
        idat.append(z.compress(row))
    idat.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b"")


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (48, 48), (0, 255, 255, 0)), "JPEG", quality=95)  # red in CMYK


def png16_gradient() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 48), (48, 1)).astype(np.uint16)
    img = Image.fromarray(ramp)
    assert img.mode == "I;16"
    return encode(img, "PNG")


def palette_with_transparency() -> bytes:
    img = Image.new("P", (48, 48), 1)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red (transparent), 1 blue
    img.paste(0, (0, 0, 24, 48))
    return encode(img, "PNG", transparency=0)


def rgba_cutout() -> bytes:
    img = Image.new("RGBA", (48, 48), (0, 0, 0, 0))  # transparent pixels that hold black
    img.paste((0, 200, 0, 255), (12, 12, 36, 36))
    return encode(img, "PNG")


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (48, 48), c) for c in ((220, 20, 20), (20, 20, 220), (20, 220, 20))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def near(pixel, rgb, tol: int = 40) -> bool:
    return all(abs(int(p) - c) <= tol for p, c in zip(pixel, rgb))


ACCEPTED = {
    # name: (file name, bytes, check of the stored image)
    "cmyk_jpeg": ("cmyk.jpg", cmyk_jpeg, lambda im: near(im.getpixel((16, 16)), (255, 0, 0), 60)),
    "png_16bit_gray": (
        "deep.png",
        png16_gradient,  # scaled to 8 bits, not clipped: dark left, mid grey centre, bright right
        lambda im: (
            im.getpixel((1, 16))[0] < 40 and 90 < im.getpixel((16, 16))[0] < 170 and im.getpixel((30, 16))[0] > 215
        ),
    ),
    "palette_with_transparency": (
        "palette.png",
        palette_with_transparency,  # the transparent (red-indexed) half comes out white, not red
        lambda im: near(im.getpixel((4, 16)), (255, 255, 255)) and near(im.getpixel((28, 16)), (0, 0, 255)),
    ),
    "rgba_alpha": (
        "cutout.png",
        rgba_cutout,  # composited over white: the transparent border is white, not the black it stores
        lambda im: near(im.getpixel((1, 1)), (255, 255, 255)) and near(im.getpixel((16, 16)), (0, 200, 0)),
    ),
    "grayscale": (
        "gray.png",
        lambda: encode(Image.new("L", (48, 48), 128), "PNG"),
        lambda im: near(im.getpixel((16, 16)), (128, 128, 128), 3),
    ),
    "animated_gif_first_frame": (
        "anim.gif",
        lambda: animated("GIF"),
        lambda im: near(im.getpixel((16, 16)), (220, 20, 20)),
    ),
    "animated_webp_first_frame": (
        "anim.webp",
        lambda: animated("WEBP"),
        lambda im: near(im.getpixel((16, 16)), (220, 20, 20)),
    ),
}

REJECTED = {
    # name: (file name, bytes, exact reason in rejects.csv)
    "one_pixel": ("dot.png", lambda: encode(Image.new("RGB", (1, 1)), "PNG"), "too small: 1x1"),
    "panorama_20000px": (
        "pano.jpg",
        lambda: encode(Image.new("RGB", (20000, 200), (90, 90, 90)), "JPEG"),
        "aspect ratio 100.0:1 (20000x200) is above 10:1: a panorama or strip, not one product",
    ),
    "decompression_bomb": (  # over twice PIL's limit: PIL itself refuses at open
        "bomb.png",
        lambda: png_bomb(30000, 30000),
        "decompression bomb: 900,000,000 pixels, over the limit of 200,000,000",
    ),
    "decompression_bomb_just_over": (  # between the limit and twice it: PIL only warns, and would decode it
        "bomb2.png",
        lambda: png_bomb(15000, 15000),
        "decompression bomb: 15000x15000 = 225,000,000 pixels, over the limit of 200,000,000",
    ),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_odd_image_formats_are_converted_to_sensible_rgb(name, tmp_path):
    filename, make, check = ACCEPTED[name]
    data = make()
    src = good_tree(tmp_path / "in")
    (src / "a" / filename).write_bytes(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = build(src, tmp_path / "out")
    assert [str(w.message) for w in caught if "PIL" in w.filename] == []  # no per-image noise
    assert rejects_of(tmp_path / "out") == {}
    assert m["per_sku"]["a"] == {"train": 4}
    assert_valid_build(tmp_path / "out")
    label, stored = stored_samples(tmp_path / "out")[hashlib.sha1(data).hexdigest()]
    assert label == m["label_map"]["sku_to_index"]["a"]
    assert min(stored.size) == SIZE and check(stored), [stored.getpixel((x, 16)) for x in (1, 16, 30)]


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_unusable_images_are_counted_skips_with_a_reason(name, tmp_path):
    filename, make, reason = REJECTED[name]
    src = good_tree(tmp_path / "in")
    (src / "a" / filename).write_bytes(make())
    assert (src / "a" / filename).stat().st_size < 2_000_000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = build(src, tmp_path / "out")
    assert [str(w.message) for w in caught if "PIL" in w.filename] == []  # DecompressionBombWarning stays in
    assert rejects_of(tmp_path / "out") == {str(src / "a" / filename): reason}
    assert m["rejects"] == 1 and m["per_sku"] == {"a": {"train": 3}, "b": {"train": 3}}
    assert_valid_build(tmp_path / "out")


def test_all_odd_files_at_once_through_the_cli(tmp_path):
    """What a user sees: exit 0, the rejects counted, no traceback and no warning but ours."""
    src = good_tree(tmp_path / "in")
    for filename, make, _ in (*ACCEPTED.values(), *REJECTED.values()):
        (src / "a" / filename).write_bytes(make())
    (src / "b" / "copy-of-a0.jpg").write_bytes((src / "a" / "0.jpg").read_bytes())  # a label conflict
    result = shards_build_cli(
        "--input", str(src), "--out", str(tmp_path / "out"), "--size", str(SIZE), "--val", "0", "--test", "0", "--quiet"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    noise = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("skuvision: warning:")]
    assert noise == [], result.stderr[-3000:]
    assert f"{len(REJECTED) + 1} rejected (see rejects.csv)" in result.stdout
    m = assert_valid_build(tmp_path / "out")
    assert m["per_sku"]["a"] == {"train": 3 + len(ACCEPTED)}, m["per_sku"]


# -- listings that cannot be built: one line, exit 2, and the build already in --out stays ------------


def write_csv(path: Path, header: list[str], rows: list[list[str]], bom: bool = False) -> Path:
    with path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def empty_dir(root: Path) -> Path:
    root.mkdir()
    return root


def dir_without_images(root: Path) -> Path:
    for sku in ("a", "b"):
        (root / sku).mkdir(parents=True)
        (root / sku / "notes.txt").write_text("no pictures here\n")
        (root / sku / "scan.pdf").write_bytes(b"%PDF-1.4\n")
    return root


def dir_holding_only_a_csv(root: Path) -> Path:
    """A user passing the folder a CSV sits in instead of the CSV (catalogue.csv is the one name read)."""
    root.mkdir()
    write_csv(root / "grocery.csv", ["path", "sku_id"], [["photos/a/0.jpg", "a"]])
    return root


def images_not_in_sku_folders(root: Path) -> Path:
    root.mkdir()
    (root / "0.jpg").write_bytes(photo(1))
    return root


def csv_without_required_columns(root: Path) -> Path:
    root.mkdir()
    (root / "0.jpg").write_bytes(photo(1))
    return write_csv(root / "list.csv", ["file", "label"], [["0.jpg", "a"]])


def csv_with_a_blank_sku_id(root: Path) -> Path:
    root.mkdir()
    (root / "0.jpg").write_bytes(photo(1))
    return write_csv(root / "list.csv", ["path", "sku_id"], [["0.jpg", "a"], ["0.jpg", "   "]])


def every_image_rejected(root: Path) -> Path:
    for sku in ("a", "b"):
        (root / sku).mkdir(parents=True)
        (root / sku / "0.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


UNBUILDABLE = {
    "empty_dir": (empty_dir, "no images found; expected DIR/<sku_id>/<image>.jpg"),
    "dir_without_images": (dir_without_images, "no images found; expected DIR/<sku_id>/<image>.jpg"),
    "dir_holding_only_a_csv": (
        dir_holding_only_a_csv,
        "or a CSV with path,sku_id (it holds grocery.csv: pass --input ",
    ),
    "images_not_in_sku_folders": (images_not_in_sku_folders, "images sit directly in it; put each SKU's images in"),
    "csv_without_required_columns": (csv_without_required_columns, "missing column(s) path, sku_id"),
    "csv_with_a_blank_sku_id": (csv_with_a_blank_sku_id, "list.csv:3: empty path or sku_id"),
    "every_image_rejected": (every_image_rejected, "the build left no training images (train 0, val 0, test 0)"),
}


@pytest.fixture(scope="module")
def good_build(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good")
    build(good_tree(root / "in"), root / "out")
    return root / "out"


@pytest.mark.parametrize("name", sorted(UNBUILDABLE))
def test_unbuildable_input_is_one_line_and_the_earlier_build_stays(name, good_build, tmp_path):
    make, expected = UNBUILDABLE[name]
    out = tmp_path / "out"
    shutil.copytree(good_build, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = shards_build_cli(
        "--input", str(make(tmp_path / "input")), "--out", str(out), "--size", str(SIZE), "--quiet"
    )
    assert expected in one_error_line(result)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert_valid_build(out)


# -- listings with duplicates and label conflicts --------------------------------------------------


def test_duplicate_csv_row_is_a_counted_skip_naming_the_first_row(tmp_path):
    good_tree(tmp_path / "img")
    listing = write_csv(
        tmp_path / "list.csv",
        ["path", "sku_id"],
        [["img/a/0.jpg", "a"], ["img/a/1.jpg", "a"], ["img/b/0.jpg", "b"], ["./img/a/../a/0.jpg", "a"]],
    )
    m = build(listing, tmp_path / "out")
    assert rejects_of(tmp_path / "out") == {
        str(tmp_path / "img/a/../a/0.jpg"): "duplicate row: line 5 lists the path of line 2"
    }
    assert m["per_sku"] == {"a": {"train": 2}, "b": {"train": 1}} and m["label_conflicts"] == []
    assert_valid_build(tmp_path / "out")


def test_one_path_under_two_skus_is_a_label_conflict(tmp_path):
    good_tree(tmp_path / "img")
    listing = write_csv(
        tmp_path / "list.csv",
        ["path", "sku_id"],
        [["img/a/0.jpg", "a"], ["img/a/1.jpg", "a"], ["img/b/0.jpg", "b"], ["img/a/1.jpg", "b"]],
    )
    m = build(listing, tmp_path / "out")
    path = str(tmp_path / "img/a/1.jpg")
    assert rejects_of(tmp_path / "out") == {
        path: "label conflict: line 5 lists it as SKU 'b', line 3 as 'a' (kept there)"
    }
    assert m["label_conflicts"] == [
        {"path": path, "sku_id": "b", "kept_path": path, "kept_sku": "a", "why": "same path"}
    ]
    assert m["per_sku"] == {"a": {"train": 2}, "b": {"train": 1}}
    assert_valid_build(tmp_path / "out")


def test_same_bytes_under_two_skus_is_reported_not_trained_on_twice(tmp_path, capfd):
    src = good_tree(tmp_path / "in", skus=("a", "b", "c"))
    (src / "c" / "same-as-a1.jpg").write_bytes((src / "a" / "1.jpg").read_bytes())
    (src / "b" / "same-as-a2.jpg").write_bytes((src / "a" / "2.jpg").read_bytes())
    m = build(src, tmp_path / "out", workers=2)  # SKUs in two worker processes: found in the main one
    err = capfd.readouterr().err
    conflicts = [line for line in err.splitlines() if "label conflict" in line]
    assert len(conflicts) == 1 and conflicts[0].startswith("skuvision: warning: 2 label conflict(s)"), err
    assert rejects_of(tmp_path / "out") == {
        str(src / "b/same-as-a2.jpg"): f"label conflict: same bytes as {src / 'a/2.jpg'} (SKU 'a', kept there)",
        str(src / "c/same-as-a1.jpg"): f"label conflict: same bytes as {src / 'a/1.jpg'} (SKU 'a', kept there)",
    }
    assert [(c["sku_id"], c["kept_sku"], c["why"]) for c in m["label_conflicts"]] == [
        ("b", "a", "same bytes"),
        ("c", "a", "same bytes"),
    ]
    assert m["per_sku"] == {"a": {"train": 3}, "b": {"train": 3}, "c": {"train": 3}}
    keys = stored_samples(tmp_path / "out")
    assert len(keys) == 9  # each image once, under the SKU that listed it first
    assert keys[hashlib.sha1((src / "a/1.jpg").read_bytes()).hexdigest()][0] == m["label_map"]["sku_to_index"]["a"]
    assert_valid_build(tmp_path / "out")


def test_same_bytes_twice_in_one_sku_is_one_image(tmp_path):
    src = good_tree(tmp_path / "in")
    (src / "a" / "again.jpg").write_bytes((src / "a" / "0.jpg").read_bytes())
    m = build(src, tmp_path / "out")
    assert rejects_of(tmp_path / "out") == {str(src / "a/again.jpg"): f"duplicate: same bytes as {src / 'a/0.jpg'}"}
    assert m["per_sku"]["a"] == {"train": 3} and m["label_conflicts"] == []
    assert_valid_build(tmp_path / "out")


# -- SKU ids ---------------------------------------------------------------------------------------

ODD_SKU_IDS = ["Coca Cola 330 ml", "dept/aisle-7/sku 42", "Müller-Milch 寿司 🍣", 'a,b "quoted"']


def test_sku_ids_with_spaces_slashes_and_unicode_survive_end_to_end(tmp_path):
    import torch

    from skuvision.export.runtime import label_map_from_document, labels_document
    from skuvision.report.per_sku import write_per_sku_report

    rows = []
    for s, sku in enumerate(ODD_SKU_IDS):
        for i in range(2):
            (tmp_path / f"{s}-{i}.jpg").write_bytes(photo(10 * s + i))
            rows.append([f"{s}-{i}.jpg", f"  {sku} " if i else sku])  # surrounding blanks are stripped
    listing = write_csv(tmp_path / "list.csv", ["path", "sku_id", "brand"], [[*r, "Bränd"] for r in rows], bom=True)
    m = build(listing, tmp_path / "out")
    assert sorted(m["label_map"]["sku_to_index"]) == sorted(ODD_SKU_IDS)
    assert {s: c["train"] for s, c in m["per_sku"].items()} == dict.fromkeys(ODD_SKU_IDS, 2)
    assert_valid_build(tmp_path / "out")
    label_map = LabelMap.load(tmp_path / "out/manifest.json")
    labels = {v: k for k, v in label_map.sku_to_index.items()}
    assert sorted(labels[label] for label, _ in stored_samples(tmp_path / "out").values()) == sorted(ODD_SKU_IDS * 2)
    # what else carries SKU ids: the exported labels.json and the per-SKU report (never a file name)
    doc = json.loads(json.dumps(labels_document(label_map)))
    assert label_map_from_document(doc).sku_to_index == label_map.sku_to_index
    n = len(ODD_SKU_IDS)
    report = write_per_sku_report(tmp_path / "per_sku.csv", torch.ones(n), torch.full((n,), 2.0), label_map.to_dict())
    with report.open(newline="", encoding="utf-8") as fh:
        assert sorted(r["sku_id"] for r in csv.DictReader(fh)) == sorted(ODD_SKU_IDS)


# -- SKUs left with too few images ----------------------------------------------------------------


def test_a_sku_with_no_valid_image_gets_no_class(tmp_path, capfd):
    src = good_tree(tmp_path / "in", skus=("a", "b", "c"))
    for f in (src / "b").iterdir():
        f.write_bytes(b"")  # every image of SKU b is rejected
    m = build(src, tmp_path / "out")
    err = capfd.readouterr().err
    assert m["label_map"]["sku_to_index"] == {"a": 0, "c": 1} and m["num_classes"] == 2
    assert m["empty_skus"] == ["b"] and "b" not in m["per_sku"] and m["split_warnings"] == []
    assert "skuvision: warning: 1 SKU(s) have no valid image (all rejected, see rejects.csv)" in err
    assert set(rejects_of(tmp_path / "out").values()) == {"zero bytes"} and m["rejects"] == 3
    assert_valid_build(tmp_path / "out")
    # a SKU that an earlier build already holds keeps its index, with no samples
    earlier = good_tree(tmp_path / "earlier", skus=("a", "b", "c"), seed=50)
    build(earlier, tmp_path / "earlier_out")
    again = build(src, tmp_path / "out2", label_map_path=str(tmp_path / "earlier_out/manifest.json"))
    assert again["label_map"]["sku_to_index"] == {"a": 0, "b": 1, "c": 2}
    assert again["empty_skus"] == ["b"] and "b" not in again["per_sku"]
    assert_valid_build(tmp_path / "out2")


def test_a_sku_with_one_valid_image_trains_and_is_flagged(tmp_path, capfd):
    src = good_tree(tmp_path / "in", skus=("a", "b"), per_sku=12)
    (src / "lonely").mkdir()
    (src / "lonely" / "0.jpg").write_bytes(photo(999))
    (src / "lonely" / "1.jpg").write_bytes(b"broken")
    m = build(src, tmp_path / "out", val=0.2, test=0.2)
    err = capfd.readouterr().err
    assert m["per_sku"]["lonely"] == {"train": 1}
    assert [w for w in m["split_warnings"] if "single valid image" in w] == [
        "1 SKU(s) have a single valid image (in one split only), so val/test cannot measure them: lonely"
    ]
    assert (
        "skuvision: warning: 1 SKU(s) have a single valid image (in one split only), so val/test cannot measure them: lonely"
        in err
    )
    assert_valid_build(tmp_path / "out")


# -- data.root at the raw images -------------------------------------------------------------------


def test_data_root_at_raw_images_says_how_to_shard_them(tmp_path):
    raw = good_tree(tmp_path / "photos")
    result = run_cli(
        "train.py",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.root={raw}",
        *TINY_MODEL,
        *QUIET,
        env={"SM_CHANNEL_TRAIN": ""},
    )
    # Lightning's seed line comes first, through Hydra's console format
    line = one_error_line(result, info=("INFO: Seed set to",))
    assert line == (
        f"skuvision: error: data.root={raw}: holds raw images, not shards (no manifest.json); build shards "
        f"from it with `skuvision shards build --input {raw} --out <shard dir>` and set data.root=<shard dir>"
    )
