"""The shard data module outside a Hydra run (tests, benchmarks, notebooks), with conf/data/shards.yaml's values.

The YAML is where the data settings' values live; ``SKUDataModule`` takes them all as arguments, so
a caller that is not ``train.py`` composes them here rather than keeping a copy.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from skuvision.config.compose import compose
from skuvision.data.datamodule import SKUDataModule


def shard_data_module(root: str | None, **settings: Any) -> SKUDataModule:
    """``data=shards`` as ``train.py`` composes it (no experiment), with ``settings`` (``batch_size=8``) over it."""
    cfg = compose(["~experiment"])
    cfg.data.root = root
    for key, value in settings.items():
        cfg.data[key] = value
    values = OmegaConf.to_container(cfg.data, resolve=True)
    values.pop("_target_")
    return SKUDataModule(**values)  # not hydra's instantiate: its wrapper would hide the one-line ConfigError
