"""LightningDataModule over skuvision litdata shards.

``root`` may be a local directory, an FSx for Lustre mount, an ``s3://`` URI
(streamed with a local cache), or empty inside SageMaker, where the training
channel directory (``SM_CHANNEL_TRAIN``) is used. litdata gives every rank the
same number of training batches (``drop_last``), so DDP never hangs on a rank
that ran out of data, and its loader state resumes mid-epoch.
"""

from __future__ import annotations

from skuvision.errors import DataError

import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from litdata import StreamingDataLoader, StreamingDataset
from torchvision.io import decode_jpeg

from skuvision.data.labels import LabelMap
from skuvision.data.shards import MANIFEST, load_manifest
from skuvision.data.transforms import AugmentConfig, eval_transform, train_transform


class SKUShardDataset(StreamingDataset):
    """Decodes the shard JPEG and applies the transform, returning (image, label)."""

    def __init__(self, input_dir: str, transform, **kwargs: Any):
        super().__init__(input_dir, **kwargs)
        self.image_transform = transform

    def __getitem__(self, index: Any) -> dict:
        sample = super().__getitem__(index)
        data = torch.frombuffer(bytearray(sample["image"]), dtype=torch.uint8)
        image = decode_jpeg(data, mode=_RGB)
        return {"image": self.image_transform(image), "label": int(sample["label"])}


try:
    from torchvision.io import ImageReadMode

    _RGB = ImageReadMode.RGB
except ImportError:  # pragma: no cover
    _RGB = None


def resolve_root(root: str | None) -> str:
    """The shard location: explicit ``root``, else the SageMaker training channel."""
    if root:
        return str(root)
    channel = os.environ.get("SM_CHANNEL_TRAIN")
    if channel:
        return channel
    raise DataError("data.root is not set: pass data.root=DIR (a shard dir built by `skuvision shards build`, an FSx path or s3://...)")


def read_manifest(root: str) -> dict:
    if root.startswith("s3://"):
        from skuvision.data.remote import read_remote_manifest

        return read_remote_manifest(root)
    return load_manifest(root)


class SKUDataModule(L.LightningDataModule):
    def __init__(
        self,
        root: str | None = None,
        image_size: int = 224,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = True,
        prefetch_factor: int | None = 2,
        persistent_workers: bool = True,
        cache_dir: str | None = None,
        max_cache_size: str = "50GB",
        augment: dict | None = None,
        seed: int = 42,
        synthetic: dict | None = None,
    ):
        super().__init__()
        self.root = resolve_root(root)
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.prefetch_factor = prefetch_factor if num_workers > 0 else None
        self.persistent_workers = persistent_workers and num_workers > 0
        self.cache_dir = cache_dir
        self.max_cache_size = max_cache_size
        self.augment = AugmentConfig(**(augment or {}))
        self.seed = seed
        self.synthetic = synthetic
        self._manifest: dict | None = None
        self.datasets: dict[str, SKUShardDataset] = {}

    # -- what the model needs before any data is read --------------------------------
    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            self._manifest = read_manifest(self.root)
        return self._manifest

    @property
    def label_map(self) -> LabelMap:
        return LabelMap.from_dict(self.manifest["label_map"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    def prepare_data(self) -> None:
        """Generate and shard the synthetic catalogue on first use (quickstart).

        Only into ``synthetic.root`` itself: a mistyped ``data.root`` must fail with "no manifest",
        never fill the wrong directory with synthetic images.
        """
        if not self.synthetic or (Path(self.root) / MANIFEST).exists():
            return
        settings = dict(self.synthetic)
        target = settings.pop("root", None)
        if target and Path(target).resolve() == Path(self.root).resolve():
            from skuvision.data.quickstart_data import ensure_synthetic_shards

            ensure_synthetic_shards(self.root, **settings)

    # -- datasets ------------------------------------------------------------------
    def _split_dir(self, split: str) -> str:
        info = self.manifest["splits"].get(split, {"count": 0})
        if not info["count"]:
            raise DataError(f"{self.root}: the '{split}' split is empty; rebuild shards with --{split} > 0 or enough images per SKU")
        return f"{self.root.rstrip('/')}/{info['dir']}"

    def _dataset(self, split: str) -> SKUShardDataset:
        if split not in self.datasets:
            train = split == "train"
            kwargs: dict[str, Any] = dict(shuffle=train, drop_last=train, seed=self.seed)
            if self.cache_dir:
                kwargs["cache_dir"] = os.path.join(self.cache_dir, split)
            if self.root.startswith("s3://"):
                kwargs["max_cache_size"] = self.max_cache_size
            transform = train_transform(self.image_size, self.augment) if train else eval_transform(self.image_size)
            self.datasets[split] = SKUShardDataset(self._split_dir(split), transform, **kwargs)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._dataset("train")
            self._dataset("val")
        if stage in (None, "fit", "validate"):
            self._dataset("val")
        if stage in (None, "test"):
            self._dataset("test")

    def _loader(self, split: str, batch_size: int) -> StreamingDataLoader:
        return StreamingDataLoader(
            self._dataset(split),
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor,
            persistent_workers=self.persistent_workers,
            drop_last=split == "train",
        )

    def train_dataloader(self) -> StreamingDataLoader:
        return self._loader("train", self.batch_size)

    def val_dataloader(self) -> StreamingDataLoader:
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> StreamingDataLoader:
        return self._loader("test", self.eval_batch_size)

    def describe(self) -> str:
        counts = {s: i["count"] for s, i in self.manifest["splits"].items()}
        return f"{self.root}: {self.num_classes} SKUs, " + json.dumps(counts)
