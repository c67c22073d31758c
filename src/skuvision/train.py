"""The training task: what ``python train.py`` and the SageMaker container entry both run.

Thin on purpose: build the DataModule, model, callbacks, loggers and Trainer from
the config, fit, test the best checkpoint, write ``metrics.json``. Returns the
metric named by ``optimized_metric`` so Hydra sweepers can optimise over runs.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def instantiate_collection(node: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a callbacks/logger group, skipping nulls."""
    from hydra.utils import instantiate

    if not node:
        return []
    return [instantiate(v) for v in node.values() if v is not None and "_target_" in v]


def resolve_checkpoint(ckpt_path: str | None, output_dir: Path) -> str | None:
    if not ckpt_path:
        return None
    from skuvision.errors import ConfigError

    if ckpt_path == "last":
        path = output_dir / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise ConfigError(f"ckpt_path=last: no {path}; pin the run dir of the run to resume (hydra.run.dir=...) or pass a checkpoint path")
        return str(path)
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: file not found")
    return ckpt_path


def _scalar(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def collect_metrics(trainer, model, test_results: list[dict] | None) -> dict[str, Any]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from skuvision.callbacks import TrainingReport

    metrics: dict[str, Any] = {k: _scalar(v) for k, v in trainer.callback_metrics.items()}
    for result in test_results or []:
        metrics.update({k: _scalar(v) for k, v in result.items()})
    ckpt = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
    if ckpt is not None and ckpt.best_model_score is not None:
        metrics["val/top1"] = float(ckpt.best_model_score)  # the checkpoint that was tested
        metrics["best_checkpoint"] = ckpt.best_model_path
    table = model.parameter_table()
    metrics.update({
        "params/total": table["total"], "params/trainable": table["trainable"], "freeze_depth": table["freeze_depth"],
        "global_batch": model.global_batch_size(), "lr/scaled": model.scaled_lr(),
        "world_size": trainer.world_size, "num_nodes": trainer.num_nodes, "epochs": trainer.current_epoch,
    })
    report = next((c for c in trainer.callbacks if isinstance(c, TrainingReport)), None)
    if report and report.images_per_sec:
        metrics["train/images_per_sec"] = statistics.median(report.images_per_sec)
        metrics["train/seconds"] = report.train_seconds
    return metrics


def write_metrics(metrics: dict, output_dir: Path) -> Path:
    path = output_dir / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


def run(cfg: DictConfig) -> float | None:
    import lightning as L
    from hydra.utils import instantiate

    from skuvision import config as config_checks

    config_checks.validate(cfg)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    try:
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.prepare_data()  # synthetic quickstart data; file-locked, safe on every rank
        log.info("data: %s", datamodule.describe())
        model = instantiate(cfg.model, num_classes=datamodule.num_classes,
                            label_map=datamodule.label_map.to_dict(), _convert_="all")
        model.report_dir = str(output_dir)
        trainer = instantiate(cfg.trainer, callbacks=instantiate_collection(cfg.get("callbacks")),
                              logger=instantiate_collection(cfg.get("logger")) or False, _convert_="all")
        table = model.parameter_table()
        log.info("model: %s freeze_depth=%d, %s params, %s trainable", cfg.model.backbone, table["freeze_depth"],
                 f"{table['total']:,}", f"{table['trainable']:,}")
        trainer.fit(model, datamodule=datamodule, ckpt_path=resolve_checkpoint(cfg.get("ckpt_path"), output_dir))
        test_results = None
        if cfg.get("test", True):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            test_results = trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        metrics = collect_metrics(trainer, model, test_results)
        if trainer.is_global_zero:
            path = write_metrics(metrics, output_dir)
            log.info("metrics: %s", path)
            log.info("outputs: %s (checkpoints/, per_sku.csv, metrics.json, csv/)", output_dir)
        return metrics.get(cfg.get("optimized_metric") or "val/top1")
    finally:
        if "wandb" in sys.modules:
            import wandb

            wandb.finish()

