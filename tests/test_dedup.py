"""Near-duplicate leakage: twins of an image (re-encoded, slightly cropped) must share its split.

The twins are made the way a camera rig or a careless copy makes them: the same frame
cropped by 0-3 % and saved again at another JPEG quality, as another file of the same SKU.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from skuvision.data.manifest import read_manifest
from skuvision.data.shards import BuildSettings, build_shards
from skuvision.data.splits import hash_unit, split_for_unit

from helpers import shards_build_cli

TWINS = [  # (sku position, image index, crop fraction, JPEG quality)
    (0, 0, 0.0, 70),
    (0, 3, 0.02, 85),
    (1, 1, 0.01, 80),
    (1, 5, 0.03, 75),
    (2, 2, 0.02, 90),
    (3, 4, 0.0, 60),
    (3, 7, 0.01, 85),
    (4, 6, 0.03, 80),
]


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def make_twin(src: Path, dst: Path, crop: float, quality: int) -> Path:
    img = Image.open(src).convert("RGB")
    w, h = img.size
    dx, dy = int(w * crop), int(h * crop)
    img.crop((dx // 2, dy, w - (dx - dx // 2), h)).save(dst, "JPEG", quality=quality)
    return dst


def splits_by_hash(root: Path) -> dict[str, str]:
    from litdata import StreamingDataset

    out = {}
    for split, info in read_manifest(root)["splits"].items():
        if info["count"]:
            ds = StreamingDataset(str(root / info["dir"]))
            out.update({ds[i]["key"]: split for i in range(len(ds))})
    return out


@pytest.fixture(scope="module")
def catalogue_with_twins(tmp_path_factory) -> tuple[Path, list[tuple[Path, Path]]]:
    from skuvision.data.synthetic import write_catalogue

    root = tmp_path_factory.mktemp("twins")
    write_catalogue(root, 5, 12, size=160, seed=21, progress=False)
    (root / "catalogue.csv").unlink()  # read as an ImageFolder so the added files count
    skus = sorted(p for p in root.iterdir() if p.is_dir())
    pairs = []
    for sku, index, crop, quality in TWINS:
        original = skus[sku] / f"{index}.jpg"
        pairs.append((original, make_twin(original, skus[sku] / f"{index}_copy.jpg", crop, quality)))
    return root, pairs


def test_twins_share_a_split_and_the_manifest_lists_each_group(catalogue_with_twins, tmp_path):
    root, pairs = catalogue_with_twins
    out = tmp_path / "shards"
    result = shards_build_cli(
        "--input",
        str(root),
        "--out",
        str(out),
        "--size",
        "128",
        "--workers",
        "2",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    split = splits_by_hash(out)
    for original, twin in pairs:
        assert split[sha1(original)] == split[sha1(twin)], (original.name, twin.name)
    groups = read_manifest(out)["near_duplicate_groups"]
    listed = sorted(sorted(Path(p).name for p in g) for gs in groups.values() for g in gs)
    expected = sorted(sorted((o.name, t.name)) for o, t in pairs)
    # every twin pair is a group, and distinct views of a SKU were not lumped in with them
    assert listed == expected
    assert {Path(o).parent.name for o, _ in pairs} == set(groups)


def test_without_grouping_the_same_twins_would_leak(catalogue_with_twins, tmp_path):
    """The control: the split of a twin by its own hash differs from its original's for some pair."""
    root, pairs = catalogue_with_twins
    build_shards(root, tmp_path / "nodedup", BuildSettings(size=128, dedup_distance=-1), progress=False)
    split = splits_by_hash(tmp_path / "nodedup")
    leaked = [t.name for o, t in pairs if split[sha1(o)] != split[sha1(t)]]
    assert leaked, "no pair straddles splits without grouping: the twin test above would prove nothing"
    assert read_manifest(tmp_path / "nodedup")["near_duplicate_groups"] == {}


def test_a_twin_added_later_joins_its_groups_split(catalogue_with_twins, tmp_path):
    root, pairs = catalogue_with_twins
    first = build_shards(root, tmp_path / "a", BuildSettings(size=128), progress=False)
    before = splits_by_hash(tmp_path / "a")
    original, twin = pairs[0]
    group_split = before[sha1(original)]
    grown = tmp_path / "grown"
    shutil.copytree(root, grown)
    # a third copy whose own hash would send its group elsewhere if the split were re-decided
    for quality in range(50, 100):
        late = make_twin(original, grown / original.parent.name / "late.jpg", 0.01, quality)
        unit = hash_unit(sha1(late))
        if (
            unit < min(hash_unit(sha1(original)), hash_unit(sha1(twin)))
            and split_for_unit(unit, 0.1, 0.1) != group_split
        ):
            break
    else:
        pytest.skip("no re-encoding quality gives a hash that would move the group")
    manifest_path = tmp_path / "a" / "manifest.json"
    assert sha1(original) in json.loads(manifest_path.read_text())["pinned_splits"]
    build_shards(grown, tmp_path / "b", BuildSettings(size=128), label_map_path=str(manifest_path), progress=False)
    after = splits_by_hash(tmp_path / "b")
    assert after[sha1(late)] == after[sha1(original)] == after[sha1(twin)] == group_split
    assert {k: v for k, v in after.items() if k in before} == before  # nothing that existed moved
    assert first["num_classes"] == 5


def test_phash_distance_separates_twins_from_distinct_views():
    """The threshold in numbers: re-encodes/slight crops are close, other views of the SKU are far."""
    from skuvision.data.imageio import prepare_image
    from skuvision.data.shards import BuildSettings
    from skuvision.data.synthetic import make_catalogue, render_view

    threshold = BuildSettings().dedup_distance
    views, twins = [], []
    for spec in make_catalogue(3, seed=4):
        hashes = []
        for i in range(10):
            img = render_view(spec, 4, i, 200)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=95)
            hashes.append(prepare_image(buf.getvalue(), 128).phash)
            w, h = img.size
            twin = io.BytesIO()
            img.crop((2, 2, w - 2, h - 3)).save(twin, "JPEG", quality=75)  # ~2 % crop, re-encoded
            twins.append((prepare_image(twin.getvalue(), 128).phash ^ hashes[-1]).bit_count())
        views += [(a ^ b).bit_count() for k, a in enumerate(hashes) for b in hashes[k + 1 :]]
    assert max(twins) <= threshold < min(views)
