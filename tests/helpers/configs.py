"""Configs the tests compose: the tiny model and run settings most tests train with."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_SKUS, TINY_IMAGES = 6, 14


def compose_train_cfg(tmp_path: Path, overrides: list[str]):
    """The config `python train.py <overrides>` would run, with outputs under tmp_path."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from skuvision.config.compose import compose

    cfg = compose(overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.data_dir = str(tmp_path / "data")
        del cfg.hydra
    return cfg


# the smallest model that still trains: resnet10t from random init (no weights offline) on 32 px images
TINY_MODEL = [
    "model.backbone=resnet10t",
    "model.pretrained=false",
    "model.freeze_depth=0",
    "model.head.hidden_dims=[32]",
    "data.image_size=32",
]
# no progress bar, CSV logger only: for tests that read a subprocess's output or time nothing; the
# multi-rank tests keep the defaults on (tests/test_distributed_collectives.py)
QUIET = ["trainer.enable_progress_bar=false", "~callbacks.progress_bar", "logger=csv"]

FAST_TRAIN = [
    "model.backbone=resnet10t",
    "model.pretrained=false",
    "model.freeze_depth=0",
    "model.head.hidden_dims=[64]",
    "data.image_size=48",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "~callbacks.progress_bar",
]
