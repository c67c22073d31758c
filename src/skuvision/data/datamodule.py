"""LightningDataModule over skuvision litdata shards (local, FSx, ``s3://`` or the SageMaker channel).

litdata gives every rank the same number of training batches, so DDP never hangs on a rank that
ran out of data, and its loader state resumes mid-epoch. Where the input time goes: BENCHMARKS.md.
"""

from __future__ import annotations

import bisect
import dataclasses
import inspect
import json
import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import torch
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming.sampler import ChunkedIndex
from torch.utils.data import default_collate

from skuvision.data import integrity
from skuvision.data.device_augment import DeviceAugment, decode_batch, jpeg_collate, pad_collate
from skuvision.data.imageio import decode_to_tensor
from skuvision.data.labels import LabelMap
from skuvision.data.manifest import MANIFEST, read_manifest, split_dir
from skuvision.data.preprocess import check_crop_pct, preprocess_spec, with_crop_pct
from skuvision.data.quickstart_data import ensure_synthetic_shards
from skuvision.data.remote import allow_http_endpoint_for_litdata, is_s3
from skuvision.data.transforms import AugmentConfig, check_eval_crops, eval_transform, train_transform
from skuvision.errors import ConfigError, DataError


class SKUShardDataset(StreamingDataset):
    """Decodes the shard JPEG and applies the transform, returning (image, label).

    With ``seeded_augment`` the random draws of a sample's augmentation come from
    (seed, epoch, sample index) instead of the worker's running random state: the same
    sample gets the same crop, rotation and colour whichever worker decodes it and
    however many samples that worker decoded before, which is what lets a run resumed
    mid-epoch (new workers, some samples already consumed) train on exactly the batches
    the uninterrupted run saw. The caller's random state is left as it was.

    With ``decode=False`` (``data.decode_on_device``) the sample's JPEG bytes are handed on as
    a uint8 tensor, to be decoded where the model trains.

    ``mix`` (training) maps every position litdata asks for through a permutation drawn from
    (seed, epoch): of the whole split (``"all"``, local shards) or of its chunk (``"chunk"``,
    streamed shards, whose chunks a worker downloads and deletes one by one). litdata gives each
    loader worker a contiguous run of the split and a batch comes from one worker, while shards
    store each SKU's images together: without the mapping a batch held only the SKUs of that run
    (BENCHMARKS.md, Real photos, issue 22). Across workers every sample is still read once per epoch.
    """

    def __init__(
        self,
        input_dir: str,
        transform,
        seeded_augment: bool = False,
        augment_seed: int = 0,
        num_classes: int = 0,
        decode: bool = True,
        mix: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(input_dir, **kwargs)
        self.mix = mix
        self._chunk_starts: list[int] | None = None
        self._perm_key: tuple | None = None
        self._perm: list[int] = []
        self.image_transform = transform
        self.decode = decode
        self.seeded_augment = seeded_augment
        self.augment_seed = augment_seed
        self.num_classes = num_classes
        self.split_dir = input_dir
        self.chunk_names = integrity.chunk_names(input_dir)

    def _chunk_bounds(self, chunk: int) -> tuple[int, int]:
        if self._chunk_starts is None:
            index_file = Path(self.input_dir.path or self.split_dir) / "index.json"
            sizes = [int(c["chunk_size"]) for c in json.loads(index_file.read_text())["chunks"]]
            self._chunk_starts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        return self._chunk_starts[chunk], self._chunk_starts[chunk + 1]

    def mixed(self, index: Any) -> Any:
        """``index`` moved to its permuted position (see the class docstring)."""
        if not (self.mix and isinstance(index, ChunkedIndex)):
            return index
        self._chunk_bounds(0)
        if self.mix == "chunk":
            start, end = self._chunk_bounds(index.chunk_index)
        else:
            start, end = 0, self._chunk_starts[-1]
        key = (self.current_epoch, start)
        if key != self._perm_key:
            order = list(range(end - start))
            random.Random(f"{self.augment_seed}:{key[0]}:{key[1]}").shuffle(order)
            self._perm_key, self._perm = key, order
        target = start + self._perm[index.index - start]
        chunk = bisect.bisect_right(self._chunk_starts, target) - 1
        return dataclasses.replace(index, index=target, chunk_index=chunk)

    def __getitem__(self, index: Any) -> dict:
        decode = decode_to_tensor if self.decode else _jpeg_bytes
        index = self.mixed(index)
        sample, image = integrity.read_sample(
            lambda: super(SKUShardDataset, self).__getitem__(index),
            index,
            self.split_dir,
            self.chunk_names,
            self.num_classes,
            decode,
        )
        if image is None:  # a damaged sample: dropped by the collate, counted in the training process
            return sample
        if not self.decode:
            return {"image": image, "label": int(sample["label"])}
        if self.seeded_augment:
            position = getattr(index, "index", index)
            state = random.getstate()
            random.seed(f"{self.augment_seed}:{self.current_epoch}:{position}")
            try:
                image = self.image_transform(image)
            finally:
                random.setstate(state)
        else:
            image = self.image_transform(image)
        return {"image": image, "label": int(sample["label"])}


allow_http_endpoint_for_litdata()  # again in spawn-started workers, which re-import this module
# older litdata permutes all items of a chunk and has no such argument
_HAS_ITEM_WINDOW = "item_shuffle_window" in inspect.signature(StreamingDataset.__init__).parameters


def _jpeg_bytes(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _uint8_as_is(image: torch.Tensor) -> torch.Tensor:
    return image


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or job's share, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_root(root: str | None) -> str:
    """The shard location: explicit ``root``, else the SageMaker training channel."""
    if root:
        return str(root)
    channel = os.environ.get("SM_CHANNEL_TRAIN")
    if channel:
        return channel
    raise DataError(
        "data.root is not set: pass data.root=DIR (a shard dir built by `skuvision shards build`, an FSx path or s3://...)"
    )


class SKUDataModule(L.LightningDataModule):
    """Every setting is an argument with no default: conf/data/shards.yaml holds the values (outside a
    Hydra run, ``skuvision.config.data_module.shard_data_module`` composes them)."""

    def __init__(
        self,
        root: str | None,
        *,
        image_size: int,
        batch_size: int,
        eval_batch_size: int | None,
        num_workers: int,
        pin_memory: bool,
        prefetch_factor: int | None,
        persistent_workers: bool,
        cache_dir: str | None,
        max_cache_size: str,
        augment: dict | None,
        seed: int,
        synthetic: dict | None,
        augment_on_device: bool,
        backbone: str,
        decode_on_device: bool,
        max_bad_samples: int,
        test_crops: int,
        test_crop_pct: float | None,
    ):
        super().__init__()
        self.root = resolve_root(root)
        self.image_size = image_size
        self.backbone = backbone  # conf: ${model.backbone}; preprocessing follows its weights
        self._preprocess: dict | None = None
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = min(num_workers, usable_cpus())  # more only queue for the same cores
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.prefetch_factor = prefetch_factor if self.num_workers > 0 else None
        self.persistent_workers = persistent_workers and self.num_workers > 0
        self.cache_dir = cache_dir
        self.max_cache_size = max_cache_size
        self.augment = AugmentConfig(**(augment or {}))
        self.augment_on_device = augment_on_device
        if decode_on_device and not augment_on_device:
            raise ConfigError(
                "data.decode_on_device=true needs data.augment_on_device=true: the decoded images are "
                "augmented where they were decoded"
            )
        self.decode_on_device = decode_on_device
        self._device_augment = None
        self.seed = seed
        self.synthetic = synthetic
        self._manifest: dict | None = None
        self._label_map: LabelMap | None = None
        self.datasets: dict[str, SKUShardDataset] = {}
        self.bad_samples = integrity.BadSamples(max_bad_samples, self.root)  # see skuvision.data.integrity
        # views per test image, softmax-averaged by the model; val (and so the best checkpoint) stays at one
        self.test_crops = check_eval_crops(test_crops, "data.test_crops")
        check_crop_pct(test_crop_pct, "data.test_crop_pct")
        self.test_crop_pct = test_crop_pct  # the test's resize (None: the backbone's crop_pct, as val)

    # -- what the model needs before any data is read --------------------------------
    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            self._manifest = read_manifest(self.root, key="data.root")
        return self._manifest

    @property
    def label_map(self) -> LabelMap:
        if self._label_map is None:  # built once: at 12k+ SKUs it is not free
            self._label_map = LabelMap.from_dict(self.manifest["label_map"])
        return self._label_map

    @property
    def preprocess(self) -> dict:
        """Mean/std, interpolation and eval resize/crop of the backbone's weights (``preprocess_spec``)."""
        if self._preprocess is None:
            self._preprocess = preprocess_spec(self.backbone, self.image_size)
        return self._preprocess

    @property
    def test_preprocess(self) -> dict:
        """``preprocess`` with the test's own ``data.test_crop_pct`` (the resize its views are cut from)."""
        return with_crop_pct(self.preprocess, self.test_crop_pct, "data.test_crop_pct")

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
            ensure_synthetic_shards(self.root, **settings)

    # -- datasets ------------------------------------------------------------------
    def _dataset(self, split: str) -> SKUShardDataset:
        if split not in self.datasets:
            train = split == "train"
            # max_cache_size always: unset, litdata logs its default once per dataset per worker
            kwargs: dict[str, Any] = dict(
                shuffle=train, drop_last=train, seed=self.seed, max_cache_size=self.max_cache_size
            )
            if train and _HAS_ITEM_WINDOW:
                # a full permutation inside each chunk: shards store each SKU's images together, and
                # litdata's default windows of 256 left a handful of SKUs per batch (BENCHMARKS.md)
                kwargs["item_shuffle_window"] = 0
            if self.cache_dir:
                kwargs["cache_dir"] = os.path.join(self.cache_dir, split)
            if is_s3(self.root):
                allow_http_endpoint_for_litdata()
            if split == "test":
                transform = eval_transform(self.test_preprocess, self.test_crops)
            elif not train:
                transform = eval_transform(self.preprocess)
            elif self.augment_on_device:  # the worker only decodes; see on_after_batch_transfer
                transform = _uint8_as_is
            else:
                transform = train_transform(self.image_size, self.augment, self.preprocess)
            directory = split_dir(
                self.root, self.manifest, split, if_empty=f"rebuild shards with --{split} > 0 or enough images per SKU"
            )
            integrity.check_chunks(self.root, directory)  # a truncated or foreign chunk: one line, before any step
            self.datasets[split] = SKUShardDataset(
                directory,
                transform,
                seeded_augment=train and not self.augment_on_device,
                augment_seed=self.seed,
                num_classes=self.num_classes,
                decode=not (train and self.decode_on_device),
                mix=("chunk" if is_s3(self.root) or self.cache_dir else "all") if train else None,
                **kwargs,
            )
        return self.datasets[split]

    def check_batches_per_rank(self, split: str, batch_size: int, world_size: int) -> None:
        """Every rank needs one full batch of ``split``, or it gets none while the others train (a hang).

        litdata hands each rank ``(images // batch) // ranks`` whole batches (the last rank also
        takes the remainder), so fewer than ``ranks x batch`` images leave some rank empty.
        """
        count = int(self.manifest["splits"].get(split, {"count": 0})["count"])
        if world_size > 1 and count < world_size * batch_size:
            key = "data.batch_size" if split == "train" else "data.eval_batch_size"
            raise DataError(
                f"{self.root}: the '{split}' split has {count} images, fewer than {world_size} ranks x batch {batch_size} "
                f"= {world_size * batch_size}, so some rank would get no batch; set {key}<={max(count // world_size, 1)}, "
                f"use fewer ranks, or rebuild the shards with more {split} images"
            )

    def setup(self, stage: str | None = None) -> None:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        for split in {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage, ("train", "val", "test")
        ):
            self.check_batches_per_rank(
                split, self.batch_size if split == "train" else self.eval_batch_size, world_size
            )
        if stage in (None, "fit"):
            self._dataset("train")
            self._dataset("val")
        if stage in (None, "fit", "validate"):
            self._dataset("val")
        if stage in (None, "test"):
            self._dataset("test")

    def _loader(self, split: str, batch_size: int) -> StreamingDataLoader:
        device_batch = split == "train" and self.augment_on_device
        return StreamingDataLoader(
            self._dataset(split),
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor,
            persistent_workers=self.persistent_workers,
            drop_last=split == "train",
            collate_fn=integrity.collate_skipping_bad(
                (jpeg_collate if self.decode_on_device else pad_collate) if device_batch else default_collate
            ),
            # worker seeds drawn from here, not from the global torch RNG: creating a loader (a new
            # epoch, a validation, a resume) must not move the random stream the model's dropout uses
            generator=torch.Generator().manual_seed(self.seed),
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count (and drop) the damaged samples the workers marked (skuvision.data.integrity); with
        ``decode_on_device``, decode the batch's JPEG bytes straight onto the training device."""
        batch = self.bad_samples.take(batch)
        if isinstance(batch, dict) and "jpeg" in batch:
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            batch = decode_batch(batch, device)
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With ``augment_on_device``: augment the uint8 training batch where it now lives (the GPU)."""
        if isinstance(batch, dict) and "sizes" in batch:
            if self._device_augment is None:
                self._device_augment = DeviceAugment(
                    self.image_size,
                    self.augment,
                    mean=tuple(self.preprocess["mean"]),
                    std=tuple(self.preprocess["std"]),
                )
            batch = dict(batch)
            batch["image"] = self._device_augment(batch["image"], batch.pop("sizes"))
        return batch

    def train_batches_per_rank(self) -> int:
        """Batches in one training epoch on this rank (a loader that is never iterated: no workers start)."""
        return len(self._loader("train", self.batch_size))

    def train_dataloader(self) -> StreamingDataLoader:
        return self._loader("train", self.batch_size)

    def val_dataloader(self) -> StreamingDataLoader:
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> StreamingDataLoader:
        return self._loader("test", self.eval_batch_size)

    def ordered_eval_dataloader(self, split: str) -> StreamingDataLoader:
        """Every image of ``split`` once, in shard order, with the eval transform (the trained model's view of
        its own training images: the ridge statistics' pass); under DDP each rank reads its share."""
        kwargs: dict[str, Any] = dict(
            shuffle=False, drop_last=False, seed=self.seed, max_cache_size=self.max_cache_size
        )
        if self.cache_dir:
            kwargs["cache_dir"] = os.path.join(self.cache_dir, split)
        if is_s3(self.root):
            allow_http_endpoint_for_litdata()
        directory = split_dir(self.root, self.manifest, split, if_empty=f"rebuild shards with --{split} > 0")
        dataset = SKUShardDataset(directory, eval_transform(self.preprocess), num_classes=self.num_classes, **kwargs)
        return StreamingDataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            num_workers=self.num_workers,
            collate_fn=integrity.collate_skipping_bad(default_collate),
        )

    def describe(self) -> str:
        counts = {s: i["count"] for s, i in self.manifest["splits"].items()}
        return f"{self.root}: {self.num_classes} SKUs, " + json.dumps(counts)
