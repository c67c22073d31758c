"""One SKU's share of a shard build, run in a worker: decode, check, resize, dedup and split its images."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from skuvision.data.build_settings import BuildSettings
from skuvision.data.imageio import UnreadableImage, prepare_image
from skuvision.data.remote import is_s3, read_object
from skuvision.data.sources import SourceImage
from skuvision.data.splits import assign_splits, near_duplicate_groups


class Sample(NamedTuple):
    split: str
    jpeg: bytes
    content_hash: str
    position: int  # index in the SKU's images: the listing index is the SKU's offset + this


@dataclass
class SKUResult:
    sku_id: str
    samples: list[Sample] = field(default_factory=list)
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    groups: list[list[str]] = field(default_factory=list)  # near-duplicate groups (paths), size > 1
    new_pins: dict[str, str] = field(default_factory=dict)
    cuts: dict[str, list[float]] = field(default_factory=dict)  # this SKU's split cuts (hash units)
    dedup_distance: int = 0  # the near-duplicate distance used: lower than asked where views look alike
    straddling: list[list[str]] = field(default_factory=list)  # groups whose given (CSV) splits differ


def read_bytes(path: str) -> bytes:
    """An original's bytes, from a file or streamed from S3; unreadable either way is a counted reject."""
    if is_s3(path):
        return _read_s3(path)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise UnreadableImage(f"unreadable: {exc.strerror or exc}") from None


def _read_s3(uri: str) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return read_object(uri)
    except ClientError as exc:
        raise UnreadableImage(f"unreadable: S3 {exc.response.get('Error', {}).get('Code', exc)}") from None
    except BotoCoreError as exc:
        raise UnreadableImage(f"unreadable: {exc}") from None


def process_sku(
    images: list[SourceImage], settings: BuildSettings, pinned: dict[str, str], cuts: dict | None = None
) -> SKUResult:
    """Decode, check, resize, dedup and split all images of one SKU (runs in a worker)."""
    result = SKUResult(images[0].sku_id)
    prepared, paths, given, positions = [], [], [], []
    first: dict[str, str] = {}  # content hash -> path: the same bytes twice in one SKU are one image
    for pos, src in enumerate(images):
        try:
            image = prepare_image(read_bytes(src.path), settings.size, settings.quality)
        except UnreadableImage as exc:
            result.rejects.append((src.path, str(exc)))
            continue
        if image.content_hash in first:
            result.rejects.append((src.path, f"duplicate: same bytes as {first[image.content_hash]}"))
            continue
        first[image.content_hash] = src.path
        prepared.append(image)
        paths.append(src.path)
        given.append(src.split)
        positions.append(pos)
    if not prepared:
        return result
    groups, result.dedup_distance = near_duplicate_groups([p.phash for p in prepared], settings.dedup_distance)
    hashes = [p.content_hash for p in prepared]
    split = assign_splits(hashes, groups, settings.val, settings.test, pinned, given, cuts)
    result.new_pins, result.cuts = split.new_pins, split.cuts
    result.samples = [Sample(s, p.jpeg, p.content_hash, i) for s, p, i in zip(split.splits, prepared, positions)]
    result.groups = [[paths[i] for i in g] for g in groups if len(g) > 1]
    result.straddling = [[paths[i] for i in g] for g in groups if len({given[i] for i in g if given[i]}) > 1]
    return result


_WORKER_PINS: dict[str, str] = {}


def init_worker(pinned: dict[str, str]) -> None:
    """Hand the pins to a worker once: sent with every task they would cost O(SKUs x pins)."""
    global _WORKER_PINS
    _WORKER_PINS = pinned


def process_sku_task(args):
    images, settings, cuts = args
    return process_sku(images, settings, _WORKER_PINS, cuts)
