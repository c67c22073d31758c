"""SKUClassifier: frozen-prefix timm backbone + MLP head (+ brand/category heads).

Hyperparameters and the label map are stored as plain Python data so a
checkpoint loads with ``torch.load(..., weights_only=True)`` and an exported
model always knows which output is which SKU.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from skuvision.data.labels import LabelMap
from skuvision.errors import ConfigError, DataError
from skuvision.model.backbone import build_backbone
from skuvision.model.gather import gather_pairs
from skuvision.model.heads import mlp_head
from skuvision.model.mixing import BatchMix, check_mix
from skuvision.model.views import average_views

REFERENCE_BATCH = 256  # the learning rate in configs is the one for a global batch of 256


def plain(value: Any) -> Any:
    """DictConfig/ListConfig -> dict/list, so hparams pickle-free."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def count_parameters(module: nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


class SKUClassifier(L.LightningModule):
    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet152",
        pretrained: bool = False,
        pretrained_file: str | None = None,
        freeze_depth: int = 4,
        head: dict | None = None,
        aux_heads: bool = True,
        aux_weight: float = 0.2,
        label_smoothing: float = 0.1,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        label_map: dict | None = None,
        compile: bool = False,
        channels_last: bool = False,
        frozen_precision: str = "fp32",
        fold_frozen_bn: bool = False,
        batch_size: int | None = None,
        mix: dict | None = None,
    ):
        super().__init__()
        head, optimizer, scheduler, label_map = (plain(x) or {} for x in (head, optimizer, scheduler, label_map))
        if int(num_classes) < 2:
            raise ConfigError(f"model.num_classes={num_classes}: need at least 2 SKUs")
        self.save_hyperparameters(
            {
                "num_classes": int(num_classes),
                "backbone": backbone,
                "pretrained": bool(pretrained),
                "pretrained_file": pretrained_file,
                "freeze_depth": int(freeze_depth),
                "head": head,
                "aux_heads": bool(aux_heads),
                "aux_weight": float(aux_weight),
                "label_smoothing": float(label_smoothing),
                "optimizer": optimizer,
                "scheduler": scheduler,
                "compile": bool(compile),
                "channels_last": bool(channels_last),
                "frozen_precision": str(frozen_precision),
                "fold_frozen_bn": bool(fold_frozen_bn),
                "batch_size": int(batch_size) if batch_size else None,
                "mix": check_mix(plain(mix)),
            }
        )
        self.mixer = BatchMix(**self.hparams.mix)
        self.label_map = label_map
        self.preprocess: dict | None = None  # set from a checkpoint; saved into checkpoints (on_save_checkpoint)
        self.backbone = build_backbone(
            backbone,
            int(freeze_depth),
            pretrained,
            pretrained_file,
            channels_last=channels_last,
            frozen_precision=frozen_precision,
            fold_frozen_bn=fold_frozen_bn,
        )
        self.head = mlp_head(self.backbone.num_features, int(num_classes), **head)
        self.aux = nn.ModuleDict()
        if aux_heads:
            self._add_aux_heads()
        self._add_metrics(int(num_classes))
        self._compiled = False

    def _add_aux_heads(self) -> None:
        """A brand and a category head where the label map has more than one of each."""
        for kind in ("brand", "category"):
            targets = self._attribute_targets(kind)
            if targets is not None and max(targets) >= 1:
                self.register_buffer(f"{kind}_of_class", torch.tensor(targets), persistent=False)
                self.aux[kind] = nn.Linear(self.backbone.num_features, max(targets) + 1)

    def _add_metrics(self, num_classes: int) -> None:
        top5 = min(5, num_classes)
        for split in ("train", "val", "test"):
            setattr(self, f"{split}_top1", MulticlassAccuracy(num_classes, top_k=1, average="micro"))
            setattr(self, f"{split}_top5", MulticlassAccuracy(num_classes, top_k=top5, average="micro"))
        if "brand" in self.aux:  # test accuracy one level up: the predicted SKU's brand (a coarse class)
            brands = len(self.aux["brand"].bias)
            self.test_brand_top1 = MulticlassAccuracy(brands, top_k=1, average="micro")
            self.test_brand_top5 = MulticlassAccuracy(brands, top_k=min(5, brands), average="micro")
        self.register_buffer("test_correct", torch.zeros(num_classes, dtype=torch.long), persistent=False)
        self.register_buffer("test_total", torch.zeros(num_classes, dtype=torch.long), persistent=False)
        self.test_errors: list[torch.Tensor] = []
        self.test_results: dict | None = None  # filled by on_test_epoch_end: per-SKU counts, misclassified pairs

    def _attribute_targets(self, kind: str) -> list[int] | None:
        if not self.label_map:
            return None

        return LabelMap.from_dict(self.label_map).attribute_targets(kind)

    # -- parameters -----------------------------------------------------------------
    def parameter_table(self) -> dict:
        total, trainable = count_parameters(self)
        head_total = sum(p.numel() for m in (self.head, self.aux) for p in m.parameters())
        stages = [{"name": n, "params": c, "trainable": t} for n, c, t in self.backbone.stage_parameters()]
        stages.append({"name": "heads", "params": head_total, "trainable": True})
        return {
            "total": total,
            "trainable": trainable,
            "frozen": total - trainable,
            "freeze_depth": self.backbone.freeze_depth,
            "stages": stages,
        }

    def configure_model(self) -> None:
        """``model.compile``: torch.compile the trainable part (where backward runs), once, in place.

        ``Module.compile`` keeps parameter names, so checkpoints load into eager models unchanged.
        """
        if self.hparams.get("compile") and not self._compiled:
            for module in (*self.backbone.trainable_units, self.head, *self.aux.values()):
                module.compile(dynamic=False)  # fixed batch shapes (drop_last); dynamic shapes hit an inductor CPU bug
            self._compiled = True

    # -- forward / steps ------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        images, labels = batch["image"], batch["label"]
        lam = 1.0  # model.mix: the weight of each image's own targets (train only; metrics read them alone)
        if split == "train":
            images, lam = self.mixer(images)
        views = images.shape[1] if images.ndim == 5 else 1  # data.test_crops: (N, views, 3, S, S), scored as one
        features = self.backbone(images.flatten(0, 1) if views > 1 else images)
        logits = average_views(self.head(features), views)
        smoothing = self.hparams.label_smoothing if split == "train" else 0.0

        def mixed_loss(out: torch.Tensor, targets: torch.Tensor, smooth: float = 0.0) -> torch.Tensor:
            loss = F.cross_entropy(out, targets, label_smoothing=smooth)
            if lam < 1.0:
                loss = lam * loss + (1.0 - lam) * F.cross_entropy(out, targets.flip(0), label_smoothing=smooth)
            return loss

        loss = mixed_loss(logits, labels, smoothing)
        for kind, head in self.aux.items():
            aux_targets = getattr(self, f"{kind}_of_class")[labels]
            loss = loss + self.hparams.aux_weight * mixed_loss(average_views(head(features), views), aux_targets)
        top1, top5 = getattr(self, f"{split}_top1"), getattr(self, f"{split}_top5")
        top1(logits, labels)
        top5(logits, labels)
        on_step = split == "train"
        self.log(
            f"{split}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            sync_dist=not on_step,
            batch_size=labels.shape[0],
        )
        self.log(
            f"{split}/top1", top1, on_step=False, on_epoch=True, prog_bar=split != "train", batch_size=labels.shape[0]
        )
        self.log(f"{split}/top5", top5, on_step=False, on_epoch=True, batch_size=labels.shape[0])
        if split == "test" and "brand" in self.aux:
            self._log_brand_accuracy(logits, labels)
        if split == "test":
            hit = logits.argmax(dim=1) == labels
            self.test_total.index_add_(0, labels, torch.ones_like(labels))
            self.test_correct.index_add_(0, labels, hit.long())
            self.test_errors.append(torch.stack([labels[~hit], logits.argmax(dim=1)[~hit]], 1).cpu())
        return loss

    def _log_brand_accuracy(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Brand (coarse) accuracy from the SKU head: each brand scores the summed probability of its SKUs.

        Why from the SKU head and not the brand head: it is what a checkout that shows the SKU
        gets right one level up (the GroceryStoreDataset's "coarse" accuracy is defined this way).
        """
        brand_of_class = self.brand_of_class
        probs = logits.float().softmax(dim=1)
        brand_probs = probs.new_zeros(probs.shape[0], len(self.aux["brand"].bias)).index_add_(1, brand_of_class, probs)
        targets = brand_of_class[labels]
        self.test_brand_top1(brand_probs, targets)
        self.test_brand_top5(brand_probs, targets)
        self.log("test/brand_top1", self.test_brand_top1, on_step=False, on_epoch=True, batch_size=labels.shape[0])
        self.log("test/brand_top5", self.test_brand_top5, on_step=False, on_epoch=True, batch_size=labels.shape[0])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_test_epoch_start(self) -> None:
        self.test_correct.zero_()
        self.test_total.zero_()
        self.test_errors = []  # (true, predicted) rows of misclassified test images -> confusions.csv

    def on_test_epoch_end(self) -> None:
        """Per-SKU counts and misclassified pairs of all ranks, on every rank (collectives: every rank runs
        this hook); ``skuvision.callbacks.sku_report.SKUReport`` writes them out."""
        correct = self.trainer.strategy.reduce(self.test_correct.float(), reduce_op="sum")
        total = self.trainer.strategy.reduce(self.test_total.float(), reduce_op="sum")
        errors = torch.cat(self.test_errors).numpy() if self.test_errors else torch.zeros(0, 2).long().numpy()
        errors = gather_pairs(
            self.trainer.strategy, errors, self.trainer.global_rank, self.trainer.world_size, self.device
        )
        self.test_results = {"correct": correct.cpu(), "total": total.cpu(), "errors": errors}

    # -- optimisation -----------------------------------------------------------------------
    def global_batch_size(self) -> int:
        """Nodes x devices x the per-device batch (``model.batch_size``, which the config ties to data.batch_size)."""
        return int(self.trainer.num_nodes * self.trainer.num_devices * (self.hparams.get("batch_size") or 1))

    def scaled_lr(self) -> float:
        return float(self.hparams.optimizer.get("lr", 1e-3)) * self.global_batch_size() / REFERENCE_BATCH

    def _total_steps(self) -> int:
        """Optimiser steps in the whole fit, for the schedule, without ``trainer.estimated_stepping_batches``.

        That property builds the fit loop's train loader here, before a resumed run restores the
        loops; the loop then keeps that loader and never loads the checkpoint's litdata state
        into it, so a resumed run restarted its epoch from the first batch. The same count from
        a throwaway loader over the same dataset leaves the fit loop alone.
        """
        trainer = self.trainer
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "train_batches_per_rank"):
            return trainer.estimated_stepping_batches
        batches = datamodule.train_batches_per_rank()
        limit = trainer.limit_train_batches
        batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
        total = (
            trainer.max_epochs * math.ceil(batches / trainer.accumulate_grad_batches)
            if trainer.max_epochs != -1
            else math.inf
        )
        return min(total, trainer.max_steps) if trainer.max_steps != -1 else total

    def configure_optimizers(self):
        opt_cfg = dict(self.hparams.optimizer)
        name = opt_cfg.pop("name", "adamw").lower()
        opt_cfg.pop("lr", None)
        lr = self.scaled_lr()
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        weight_decay = float(opt_cfg.pop("weight_decay", 0.05))
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if name == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(opt_cfg.get("betas", (0.9, 0.999))))
        elif name == "sgd":
            optimizer = torch.optim.SGD(
                groups,
                lr=lr,
                momentum=float(opt_cfg.get("momentum", 0.9)),
                nesterov=bool(opt_cfg.get("nesterov", True)),
            )
        else:
            raise ConfigError(f"model.optimizer.name={name}: use adamw or sgd")
        sched = self.hparams.scheduler or {}
        total = max(1, int(self._total_steps()))
        warmup = int(sched.get("warmup_fraction", 0.05) * total)
        floor = float(sched.get("min_lr_ratio", 0.01))

        def lr_lambda(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        """Parameter counts, global batch and scaled lr go to every logger once (Lightning forbids self.log here)."""
        table = self.parameter_table()
        values = {
            "params/total": float(table["total"]),
            "params/trainable": float(table["trainable"]),
            "global_batch": float(self.global_batch_size()),
            "lr/scaled": self.scaled_lr(),
        }
        for stage in table["stages"]:
            values[f"params/{stage['name'].split(' ')[0]}"] = float(stage["params"])
        for logger in self.loggers:
            logger.log_metrics(values, step=0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["label_map"] = self.label_map
        # the eval preprocessing (image size, resize/crop, mean/std) travels with the weights: a checkpoint
        # copied out of its run dir (model.tar.gz, S3) still exports and predicts as it was tested
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        spec = getattr(datamodule, "preprocess", None) or self.preprocess
        if spec:
            checkpoint["preprocess"] = dict(spec)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("label_map"):
            self.label_map = checkpoint["label_map"]
        self.preprocess = checkpoint.get("preprocess") or self.preprocess


def rebuild_classifier(
    ckpt: dict, num_classes: int | None = None, label_map: dict | None = None
) -> tuple[SKUClassifier, list[str]]:
    """The model a checkpoint describes, with the checkpoint's weights (never downloaded ones) and preprocessing.

    With another ``num_classes``/``label_map`` (onboarding grows the catalogue) the layers whose shape
    no longer fits keep their fresh initialisation; their state keys come back so the caller fills them.
    """
    hparams = {**ckpt["hyper_parameters"], "pretrained": False, "pretrained_file": None}
    if num_classes is not None:
        hparams["num_classes"] = int(num_classes)
    model = SKUClassifier(label_map=ckpt.get("label_map") if label_map is None else label_map, **hparams)
    own = model.state_dict()
    fits = {k: v for k, v in ckpt["state_dict"].items() if k in own and own[k].shape == v.shape}
    unexpected = sorted(set(ckpt["state_dict"]) - set(own))
    if unexpected:
        raise DataError(f"checkpoint does not match its own hyper_parameters ({unexpected[0]}); was it edited?")
    model.load_state_dict(fits, strict=False)
    model.preprocess = ckpt.get("preprocess")
    return model, sorted(set(own) - set(fits))


def load_classifier(checkpoint_path: str, map_location: str = "cpu") -> SKUClassifier:
    """Rebuild a trained classifier (label map included) from a Lightning checkpoint."""
    ckpt = torch.load(checkpoint_path, map_location=map_location, weights_only=True)
    model, unfilled = rebuild_classifier(ckpt)
    if unfilled:
        raise DataError(
            f"{checkpoint_path}: checkpoint does not match its own hyper_parameters ({unfilled[0]}); was it edited?"
        )
    return model
