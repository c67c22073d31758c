"""Config schemas and checks that turn a bad value into one line naming the key.

The YAML tree under ``conf/`` stays the source of truth (lightning-hydra-template
style); these dataclasses are registered in Hydra's ConfigStore under
``schema/*`` and merged over the composed groups to type-check them, and
``validate`` adds the range checks a type cannot express.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from skuvision.data.preprocess import check_crop_pct
from skuvision.data.transforms import check_eval_crops
from skuvision.errors import ConfigError
from skuvision.model.backbone import check_backbone
from skuvision.model.mixing import check_mix


@dataclass
class HeadConfig:
    hidden_dims: list[int] = field(default_factory=lambda: [512])
    dropout: float = 0.2
    norm: str = "none"


@dataclass
class ModelConfig:
    _target_: str = "skuvision.model.module.SKUClassifier"
    num_classes: Optional[int] = None
    backbone: str = "resnet152"
    pretrained: bool = False
    pretrained_file: Optional[str] = None
    freeze_depth: int = 4
    head: HeadConfig = field(default_factory=HeadConfig)
    aux_heads: bool = True
    aux_weight: float = 0.2
    label_smoothing: float = 0.1
    optimizer: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    compile: bool = False
    batch_size: Optional[int] = None
    channels_last: bool = False
    frozen_precision: str = "fp32"
    fold_frozen_bn: bool = False
    mix: dict[str, float] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Keys and types only: the values live in conf/data/shards.yaml (MISSING here cannot disagree with it)."""

    _target_: str = "skuvision.data.datamodule.SKUDataModule"
    root: Optional[str] = MISSING
    image_size: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: Optional[int] = MISSING
    num_workers: int = MISSING
    pin_memory: bool = MISSING
    prefetch_factor: Optional[int] = MISSING
    persistent_workers: bool = MISSING
    cache_dir: Optional[str] = MISSING
    max_cache_size: str = MISSING
    seed: int = MISSING
    augment: dict[str, float] = MISSING
    augment_on_device: bool = MISSING
    decode_on_device: bool = MISSING
    max_bad_samples: int = MISSING
    test_crops: int = MISSING
    test_crop_pct: Optional[float] = MISSING
    synthetic: Optional[dict[str, Any]] = MISSING
    backbone: str = MISSING  # ${model.backbone}: preprocessing follows the backbone's weights


cs = ConfigStore.instance()
cs.store(group="schema/model", name="sku_classifier", node=ModelConfig)
cs.store(group="schema/data", name="shards", node=DataConfig)


def _typed(schema: type, node: DictConfig, key: str) -> DictConfig:
    try:
        # resolve in place first: `${paths.data_dir}/...` inside model/data only resolves against the whole config
        resolved = OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
        return OmegaConf.merge(OmegaConf.structured(schema), resolved)
    except MissingMandatoryValue:
        raise
    except OmegaConfBaseException as exc:
        full_key = f"{key}.{exc.full_key}" if getattr(exc, "full_key", None) else key
        raise ConfigError(f"{full_key}: {str(exc).splitlines()[0]}") from None


def validate(cfg: DictConfig, need_data: bool = True) -> None:
    """Raise ConfigError naming the first bad key; cheap (the backbone is built on the meta device only)."""
    if "onboard" in cfg:  # the former `train.py experiment=onboard`: onboarding has its own command and config
        raise ConfigError(
            "onboarding is its own task now: python onboard.py onboard.from=CKPT data.root=DELTA "
            "(config conf/onboard.yaml; README, Monthly onboarding)"
        )
    model = _typed(ModelConfig, cfg.model, "model")
    data = _typed(DataConfig, cfg.data, "data") if need_data else None
    check_backbone(model.backbone, model.freeze_depth)  # the name and freeze-depth range, as training checks them
    if model.pretrained_file and not os.path.isfile(model.pretrained_file):
        hint = (
            " (experiment=finetune_synthetic: run `python train.py experiment=pretrain_synthetic` first)"
            if cfg.get("task_name") == "finetune_synthetic"
            else ""
        )
        raise ConfigError(
            f"model.pretrained_file={model.pretrained_file}: file not found; pass a local .safetensors/.pth{hint}"
        )
    if not 0.0 <= model.label_smoothing < 1.0:
        raise ConfigError(f"model.label_smoothing={model.label_smoothing}: must be in [0, 1)")
    check_mix(model.mix)
    if data is None:
        return
    try:
        root = cfg.data.root
    except MissingMandatoryValue:
        root = None
    if not root and not os.environ.get("SM_CHANNEL_TRAIN"):
        raise ConfigError(
            "data.root is required: pass data.root=DIR (from `skuvision shards build`), an FSx path or s3://bucket/prefix"
        )
    for key in ("image_size", "batch_size"):
        if getattr(data, key) < 1:
            raise ConfigError(f"data.{key}={getattr(data, key)}: must be positive")
    if data.image_size < 32:
        raise ConfigError(f"data.image_size={data.image_size}: must be at least 32 pixels")
    if data.num_workers < 0:
        raise ConfigError(f"data.num_workers={data.num_workers}: must be >= 0")
    check_eval_crops(data.test_crops, "data.test_crops")
    check_crop_pct(data.test_crop_pct, "data.test_crop_pct")
