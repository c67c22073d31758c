"""The training task: what ``python train.py`` and the SageMaker container entry both run.

Thin on purpose: build the DataModule, model, callbacks, loggers and Trainer from
the config, fit, test the best checkpoint, write ``metrics.json``. Returns the
metric named by ``optimized_metric`` so Hydra sweepers can optimise over runs.
"""

from __future__ import annotations

import logging
import statistics
import sys
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from skuvision.callbacks.collectives import EpochMetricsSync
from skuvision.callbacks.ridge_statistics import RidgeStatistics
from skuvision.callbacks.summary import TrainingReport
from skuvision.checkpoints import AtomicCheckpointIO, newest_loadable
from skuvision.config.schema import validate
from skuvision.distributed import layout
from skuvision.distributed.failures import lost_peer_message
from skuvision.errors import ConfigError
from skuvision.files import write_json
from skuvision.loggers import wandb_report
from skuvision.model.export_backbone import export_backbone
from skuvision.model.warm_start import check_path, warm_start
from skuvision.quiet import quiet_library_noise

# Deferred on purpose: wandb is slow to import and loads only when a run logs to it.

log = logging.getLogger(__name__)
SIGTERM_STATUS = 143  # 128 + SIGTERM, what a shell reports for a process the signal ended


def instantiate_collection(node: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a callbacks/logger group, skipping nulls."""
    if not node:
        return []
    return [instantiate(v) for v in node.values() if v is not None and "_target_" in v]


def resolve_checkpoint(ckpt_path: str | None, output_dir: Path, checkpoint_dir: str | None = None) -> str | None:
    """None, a path, ``last`` (must exist) or ``auto`` (``last.ckpt`` if a previous attempt left one: spot restarts).

    ``last``/``auto`` take ``last.ckpt`` when it loads, else the newest checkpoint in the dir that does.
    """
    if not ckpt_path:
        return None

    if ckpt_path in ("last", "auto"):
        directory = Path(checkpoint_dir) if checkpoint_dir else output_dir / "checkpoints"
        found = newest_loadable(directory)  # last.ckpt, or the newest checkpoint that loads if it does not
        if found is not None or ckpt_path == "auto":
            return str(found) if found else None
        raise ConfigError(
            f"ckpt_path=last: no loadable checkpoint in {directory}; pin the run dir of the run to resume "
            "(hydra.run.dir=...) or pass a checkpoint path"
        )
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: file not found")
    return ckpt_path


def _scalar(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def collect_metrics(trainer, model, test_results: list[dict] | None, datamodule=None) -> dict[str, Any]:
    metrics: dict[str, Any] = {k: _scalar(v) for k, v in trainer.callback_metrics.items()}
    for result in test_results or []:
        metrics.update({k: _scalar(v) for k, v in result.items()})
    ckpt = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
    if ckpt is not None and ckpt.best_model_score is not None:
        metrics["val/top1"] = float(ckpt.best_model_score)  # the checkpoint that was tested
        metrics["best_checkpoint"] = ckpt.best_model_path
    table = model.parameter_table()
    metrics.update(
        {
            "params/total": table["total"],
            "params/trainable": table["trainable"],
            "freeze_depth": table["freeze_depth"],
            "global_batch": model.global_batch_size(),
            "lr/scaled": model.scaled_lr(),
            "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "epochs": trainer.current_epoch,
        }
    )
    if test_results and getattr(datamodule, "test_crops", None) is not None:  # what test/top1 was measured on
        metrics["test/crops"] = datamodule.test_crops
        metrics["test/crop_pct"] = datamodule.test_preprocess["crop_pct"]
    bad = getattr(datamodule, "bad_samples", None)
    if bad is not None:
        metrics["data/bad_samples"] = len(bad.seen)  # skipped, never silently (skuvision.data.integrity)
    report = next((c for c in trainer.callbacks if isinstance(c, TrainingReport)), None)
    if report and report.images_per_sec:
        metrics["train/images_per_sec"] = statistics.median(report.images_per_sec)
        metrics["train/seconds"] = report.train_seconds
    ridge = next((c for c in trainer.callbacks if isinstance(c, RidgeStatistics)), None)
    if ridge and ridge.seconds is not None:  # the extra pass that leaves onboarding's ridge sums in the checkpoint
        metrics["ridge/seconds"] = ridge.seconds
        metrics["ridge/images"] = ridge.images
    return metrics


def write_metrics(metrics: dict, output_dir: Path) -> Path:
    return write_json(output_dir / "metrics.json", metrics, sort_keys=True, default=str)


def build_datamodule(cfg: DictConfig):
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()  # synthetic quickstart data; file-locked, safe on every rank
    log.info("data: %s", datamodule.describe())
    return datamodule


def build_model(cfg: DictConfig, datamodule):
    model = instantiate(
        cfg.model, num_classes=datamodule.num_classes, label_map=datamodule.label_map.to_dict(), _convert_="all"
    )
    if cfg.get("init_from"):
        carried = warm_start(model, str(cfg.init_from))
        log.info(
            "init_from %s: %d tensors, %d SKU rows carried over, %d new SKUs start fresh",
            cfg.init_from,
            carried["tensors"],
            carried["skus_carried"],
            carried["skus_new"],
        )
    table = model.parameter_table()
    log.info(
        "model: %s freeze_depth=%d, %s params, %s trainable",
        cfg.model.backbone,
        table["freeze_depth"],
        f"{table['total']:,}",
        f"{table['trainable']:,}",
    )
    return model


def build_trainer(cfg: DictConfig) -> L.Trainer:
    callbacks = [EpochMetricsSync(), *instantiate_collection(cfg.get("callbacks"))]  # first: see its docstring
    plugins = [AtomicCheckpointIO()] if "plugins" not in cfg.trainer else None  # a kill mid-save keeps the old file
    return instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=instantiate_collection(cfg.get("logger")) or False,
        _convert_="all",
        **({"plugins": plugins} if plugins else {}),
        **layout.cluster_layout(cfg.trainer),
    )  # devices/num_nodes "auto" -> the cluster's


def fit(cfg: DictConfig, trainer: L.Trainer, model, datamodule, output_dir: Path) -> None:
    """``trainer.fit`` from the checkpoint ``ckpt_path`` names; a SIGTERM or a lost peer ends it with a clear line."""
    try:
        trainer.fit(
            model,
            datamodule=datamodule,
            ckpt_path=resolve_checkpoint(cfg.get("ckpt_path"), output_dir, cfg.paths.get("checkpoint_dir")),
        )
    except SIGTERMException:  # the resume checkpoint is written (callbacks.resume): a non-zero exit, not "done"
        log.info("stopped by SIGTERM; resume with ckpt_path=last (the same run dir) or auto (SageMaker)")
        raise SIGTERMException(SIGTERM_STATUS) from None
    except Exception as exc:
        message = lost_peer_message(exc, trainer.global_rank, trainer.world_size)
        if message:
            log.error(message)
        raise


def evaluate_best(cfg: DictConfig, trainer: L.Trainer, model, datamodule) -> list[dict] | None:
    """Test the best checkpoint (the last weights without a checkpoint callback); None with ``test=false``."""
    if not cfg.get("test", True):
        return None
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    return trainer.test(model, datamodule=datamodule, ckpt_path=best or None)


def write_outputs(cfg: DictConfig, trainer: L.Trainer, model, metrics: dict, output_dir: Path) -> None:
    """metrics.json and the optional backbone export (rank 0), then the W&B summary and model artifact."""
    if trainer.is_global_zero:
        path = write_metrics(metrics, output_dir)
        log.info("metrics: %s", path)
        log.info("outputs: %s (checkpoints/, per_sku.csv, metrics.json, csv/)", output_dir)
        if cfg.get("export_backbone"):  # the tested (best) weights after test, else the last
            export_backbone(model, cfg.export_backbone, {"run_dir": output_dir, "val/top1": metrics.get("val/top1")})
    wandb_report.finish_run(trainer, model, metrics, output_dir)  # summary, worst SKUs, model artifact


def train_and_test(cfg: DictConfig) -> float | None:
    output_dir = Path(cfg.paths.output_dir)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    trainer = build_trainer(cfg)
    wandb_report.start_run(trainer, model, cfg)  # resolved config + per-stage params; no-op without W&B
    fit(cfg, trainer, model, datamodule, output_dir)
    metrics = collect_metrics(trainer, model, evaluate_best(cfg, trainer, model, datamodule), datamodule)
    write_outputs(cfg, trainer, model, metrics, output_dir)
    return metrics.get(cfg.get("optimized_metric") or "val/top1")


def run(cfg: DictConfig) -> float | None:
    validate(cfg)
    if cfg.get("init_from"):
        check_path(str(cfg.init_from))
    quiet_library_noise()
    L.seed_everything(cfg.seed, workers=True)
    try:
        return train_and_test(cfg)
    finally:
        if "wandb" in sys.modules:  # deferred: only a run with the W&B logger imported it
            import wandb

            wandb.finish()
