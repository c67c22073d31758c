"""A split of a shard dir as decoded uint8 images and labels, in shard order.

Evaluation, INT8 calibration, the parity test and the benchmark all read shards this way: the
same decoder as the training data loader (``decode_to_tensor``), no augmentation, no workers,
deterministic order, so two runs over one split see the same images in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from litdata import StreamingDataset

from skuvision.data.imageio import decode_to_tensor
from skuvision.data.manifest import read_manifest, split_dir


def split_images(shards_dir: str | Path, split: str) -> tuple[str, int]:
    """(directory of ``split``'s chunks, its image count); one clear line when it is missing or empty."""
    manifest = read_manifest(shards_dir)
    directory = split_dir(shards_dir, manifest, split, if_empty="pick another --split or rebuild the shards")
    return directory, int(manifest["splits"][split]["count"])


def manifest_label_map(shards_dir: str | Path) -> dict:
    return read_manifest(shards_dir)["label_map"]


def iter_split(shards_dir: str | Path, split: str, limit: int | None = None) -> Iterator[tuple[object, int]]:
    """(uint8 tensor (3, H, W), class index) for every image of ``split`` (or the first ``limit``)."""
    directory, count = split_images(shards_dir, split)
    dataset = StreamingDataset(directory, shuffle=False)
    for i in range(min(count, len(dataset)) if limit is None else min(limit, count, len(dataset))):
        sample = dataset[i]
        yield decode_to_tensor(sample["image"]), int(sample["label"])


def load_batch(shards_dir: str | Path, split: str, transform, limit: int | None = None):
    """(float32 (N, 3, S, S) batch, labels list): ``transform`` (the eval transform) applied to a split."""
    images, labels = [], []
    for image, label in iter_split(shards_dir, split, limit):
        images.append(transform(image))
        labels.append(label)
    return torch.stack(images), labels
