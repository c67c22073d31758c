"""The synthetic catalogue must be deterministic, fine-grained and really augmented."""

from __future__ import annotations

import csv
import io
from collections import defaultdict

import numpy as np
import pytest

from skuvision.data.synthetic import SKUSpec, make_catalogue, render_view, write_catalogue


def _jpeg(img, quality=90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_catalogue_is_deterministic_and_seeds_are_disjoint():
    a, b = make_catalogue(30, seed=0), make_catalogue(30, seed=0)
    assert a == b
    assert len({s.sku_id for s in a}) == 30
    assert all(s.sku_id.startswith("SKU-") and len(s.sku_id) == 12 for s in a)
    assert make_catalogue(7, seed=0) == a[:7]  # a SKU id always denotes the same product
    c = make_catalogue(30, seed=1)
    assert not {s.sku_id for s in a} & {s.sku_id for s in c}
    assert not {s.brand for s in a} & {s.brand for s in c}


def test_same_view_renders_identical_bytes():
    cat = make_catalogue(3, seed=7)
    for spec, index in [(cat[0], 0), (cat[1], 5), (cat[2], 123)]:
        first = render_view(spec, 7, index, size=64)
        assert first.mode == "RGB" and first.size == (64, 64)
        assert _jpeg(first) == _jpeg(render_view(spec, 7, index, size=64))
    assert _jpeg(render_view(cat[0], 7, 0, 64)) != _jpeg(render_view(cat[0], 8, 0, 64))


def test_families_share_brand_but_differ_in_variant_and_accent():
    cat = make_catalogue(40, seed=3)
    families: dict[str, list[SKUSpec]] = defaultdict(list)
    for spec in cat:
        families[spec.brand].append(spec)
    sizes = [len(f) for f in families.values()]
    assert all(2 <= n <= 4 for n in sizes[:-1]) and 1 <= sizes[-1] <= 4  # last may be cut short
    for members in families.values():
        for field in ("category", "shape", "base_rgb", "logo", "family"):
            assert len({getattr(m, field) for m in members}) == 1, field
        assert len({m.variant for m in members}) == len(members)
        assert len({m.accent_rgb for m in members}) == len(members)


def test_views_of_one_sku_differ():
    spec = make_catalogue(1, seed=0)[0]
    views = [np.asarray(render_view(spec, 0, i, size=96), dtype=np.float32) for i in range(6)]
    for i in range(len(views)):
        for j in range(i + 1, len(views)):
            assert np.abs(views[i] - views[j]).mean() > 10


def test_studio_views_of_one_sku_are_alike_and_shelf_views_are_not():
    """--views studio: one rig shot per SKU, slightly varied; far closer to each other than shelf views."""
    spec = make_catalogue(2, seed=0)[0]

    def spread(views: str) -> float:
        imgs = [np.asarray(render_view(spec, 0, i, size=96, views=views), dtype=np.float32) for i in range(6)]
        return float(np.mean([np.abs(a - b).mean() for k, a in enumerate(imgs) for b in imgs[k + 1 :]]))

    studio, shelf = spread("studio"), spread("shelf")
    assert 0 < studio < 16 < shelf and studio < shelf / 4, (studio, shelf)
    assert _jpeg(render_view(spec, 0, 3, 64, "studio")) == _jpeg(render_view(spec, 0, 3, 64, "studio"))
    with pytest.raises(ValueError, match="views must be one of shelf, studio"):
        render_view(spec, 0, 0, 64, views="turntable")


def test_renders_large_images():
    img = render_view(make_catalogue(1, seed=0)[0], 0, 0, size=1000)
    assert img.size == (1000, 1000) and img.mode == "RGB"


def test_write_catalogue_tree_csv_and_parallel_bytes(tmp_path):
    one = write_catalogue(tmp_path / "w1", num_skus=3, images_per_sku=4, size=48, seed=5, workers=1, progress=False)
    assert one == tmp_path / "w1" / "catalogue.csv"
    with open(one, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "sku_id", "brand", "category"]
    cat = make_catalogue(3, seed=5)
    expected = [(f"{s.sku_id}/{i}.jpg", s.sku_id, s.brand, s.category) for s in cat for i in range(4)]
    assert [(r["path"], r["sku_id"], r["brand"], r["category"]) for r in rows] == expected
    jpgs = sorted(p.relative_to(tmp_path / "w1").as_posix() for p in (tmp_path / "w1").rglob("*.jpg"))
    assert jpgs == sorted(e[0] for e in expected)
    assert (tmp_path / "w1" / cat[1].sku_id / "2.jpg").read_bytes() == _jpeg(render_view(cat[1], 5, 2, 48))

    two = write_catalogue(tmp_path / "w2", num_skus=3, images_per_sku=4, size=48, seed=5, workers=2, progress=False)
    assert two.read_bytes() == one.read_bytes()
    for path, *_ in expected:
        assert (tmp_path / "w2" / path).read_bytes() == (tmp_path / "w1" / path).read_bytes()

    before = (tmp_path / "w1" / expected[0][0]).read_bytes()  # re-running overwrites identically
    write_catalogue(tmp_path / "w1", num_skus=3, images_per_sku=4, size=48, seed=5, progress=False)
    assert (tmp_path / "w1" / expected[0][0]).read_bytes() == before


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_skus": 0}, "num_skus"),
        ({"images_per_sku": 0}, "images_per_sku"),
        ({"size": 8}, "size"),
        ({"workers": 0}, "workers"),
        ({"quality": 101}, "quality"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(tmp_path, kwargs, name):
    args = {"num_skus": 2, "images_per_sku": 1, "size": 32, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=name) as err:
        write_catalogue(tmp_path, **args)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "catalogue.csv").exists()


def test_bad_arguments_outside_write_catalogue():
    with pytest.raises(ValueError, match="num_skus"):
        make_catalogue(0)
    with pytest.raises(ValueError, match="size"):
        render_view(make_catalogue(1)[0], 0, 0, size=4)
