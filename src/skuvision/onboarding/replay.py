"""A bounded, deterministic replay of old SKUs' images from the base shard sets.

Why bounded: reading the whole base every month is the cost onboarding exists to avoid; a
few images per old SKU are enough to keep the grown head from claiming old products for the
new rows. Why deterministic: two runs on the same shards must train on the same images, so
a result can be reproduced and compared.

No index of labels is read: ``shards build`` writes each split SKU by SKU in the order of the
manifest's ``per_sku``, so the positions of one SKU's images follow from the counts. Every
picked sample's label is checked on read, so a shard set written any other way fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass

from litdata import StreamingDataset

from skuvision.data.imageio import decode_to_tensor
from skuvision.data.manifest import split_dir
from skuvision.errors import DataError


@dataclass(frozen=True)
class Pick:
    """One image to read: split directory, position in it, and the class index it must carry."""

    split_dir: str
    position: int
    label: int


def sku_ranges(manifest: dict, split: str) -> dict[str, tuple[int, int]]:
    """SKU -> (first position, count) of its images in ``split``, from the manifest's per-SKU counts."""
    ranges, offset = {}, 0
    for sku, counts in manifest["per_sku"].items():
        n = int(counts.get(split, 0))
        if n:
            ranges[sku] = (offset, n)
        offset += n
    if offset != int(manifest["splits"][split]["count"]):
        raise DataError(
            f"manifest per_sku counts for '{split}' sum to {offset}, not {manifest['splits'][split]['count']}; "
            "rebuild the shard set with `skuvision shards build`"
        )
    return ranges


def spread(start: int, count: int, limit: int | None) -> list[int]:
    """``limit`` positions spread evenly over ``[start, start + count)`` (all of them when limit is None)."""
    if limit is None or count <= limit:
        return list(range(start, start + count))
    return [start + (k * count) // limit for k in range(limit)]


def old_sku_picks(chain: list[tuple[str, dict]], skus: dict[str, int], split: str, per_sku: int | None) -> list[Pick]:
    """At most ``per_sku`` images of each SKU in ``skus`` (id -> class index) from ``split`` of the chain.

    Each SKU is read from the newest shard set that holds images of it in that split. Positions
    are evenly spread over the SKU's images, so the pick is the same on every run.
    """
    if per_sku is not None and per_sku < 0:
        raise DataError(f"onboard.replay_per_sku={per_sku}: must be >= 0")
    picks: list[Pick] = []
    remaining = dict(skus)
    for root, manifest in chain:
        if not remaining or not int(manifest["splits"].get(split, {"count": 0})["count"]):
            continue
        ranges = sku_ranges(manifest, split)
        directory = split_dir(root, manifest, split)
        for sku in [s for s in remaining if s in ranges]:
            start, count = ranges[sku]
            picks += [Pick(directory, p, remaining[sku]) for p in spread(start, count, per_sku)]
            del remaining[sku]
    return picks


def split_picks(root: str, manifest: dict, split: str, per_sku: int | None = None) -> list[Pick]:
    """The images of ``split`` in one shard set (the delta's new SKUs), optionally bounded per SKU."""
    if not int(manifest["splits"].get(split, {"count": 0})["count"]):
        return []
    index = manifest["label_map"]["sku_to_index"]
    directory = split_dir(root, manifest, split)
    return [
        Pick(directory, p, int(index[sku]))
        for sku, (start, n) in sku_ranges(manifest, split).items()
        for p in spread(start, n, per_sku)
    ]


def read_picks(picks: list[Pick], cache_dir: str | None = None):
    """Yield (uint8 CHW image, label) for each pick, in order; checks every label against the pick."""
    datasets: dict[str, StreamingDataset] = {}
    for pick in picks:
        if pick.split_dir not in datasets:
            kwargs = {"cache_dir": f"{cache_dir}/{abs(hash(pick.split_dir))}"} if cache_dir else {}
            datasets[pick.split_dir] = StreamingDataset(pick.split_dir, max_cache_size="10GB", **kwargs)
        sample = datasets[pick.split_dir][pick.position]
        if int(sample["label"]) != pick.label:
            raise DataError(
                f"{pick.split_dir}[{pick.position}]: label {sample['label']}, expected {pick.label} from "
                "the manifest's per_sku order; was this shard set written by `skuvision shards build`?"
            )
        yield decode_to_tensor(sample["image"]), pick.label
