"""What a training job sends to W&B beyond Lightning's metric stream.

At start: the resolved config (secrets dropped) plus the job's overrides, and the parameter table per
stage. At the end: the summary numbers of ``metrics.json`` (so W&B's run table carries the same columns
as ``skuvision compare``), the 50 worst SKUs of the test set as a ``wandb.Table``, and, with
``logger.wandb.log_model=true``, one ``model`` artifact holding the best checkpoint and the label map.

Every function is a no-op without a WandbLogger, and only rank 0 touches W&B (Lightning's
``rank_zero_experiment`` hands the other ranks a dummy).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from skuvision.loggers.wandb import job_overrides, plain_config
from skuvision.model.artifacts import write_model_artifacts

# Deferred on purpose: wandb is slow to import and loads only when a run logs to it.

log = logging.getLogger(__name__)

WORST_SKUS = 50


def wandb_loggers(trainer) -> list:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def start_run(trainer, model, cfg) -> None:
    """Config as W&B columns, the job's overrides, and the per-stage parameter table."""
    loggers = wandb_loggers(trainer)
    if not loggers or not trainer.is_global_zero:
        return

    config = plain_config(cfg)
    config["overrides"] = job_overrides()
    table = model.parameter_table()
    rows = [[s["name"], int(s["params"]), bool(s["trainable"])] for s in table["stages"]]
    for lg in loggers:
        lg.log_hyperparams(config)
        lg.log_table("params/stages", columns=["stage", "params", "trainable"], data=rows)
        lg.experiment.summary.update({"params/total": table["total"], "params/trainable": table["trainable"]})


def worst_skus(per_sku_csv: Path, limit: int = WORST_SKUS) -> tuple[list[str], list[list[Any]]]:
    """Header and the first ``limit`` rows of ``per_sku.csv`` (already sorted worst first), typed."""
    with per_sku_csv.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [row for _, row in zip(range(limit), reader)]
    numeric = {"class_index": int, "test_images": int, "correct": int, "accuracy": float}
    typed = [[numeric.get(h, str)(v) for h, v in zip(header, row)] for row in rows]
    return header, typed


def _summary_values(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def finish_run(trainer, model, metrics: dict, output_dir: Path) -> None:
    """Summary numbers, the worst-SKU table and (``log_model``) the model artifact."""
    loggers = wandb_loggers(trainer)
    if not loggers or not trainer.is_global_zero:
        return
    per_sku = Path(output_dir) / "per_sku.csv"
    for lg in loggers:
        lg.experiment.summary.update(_summary_values(metrics))
        if per_sku.is_file():
            columns, rows = worst_skus(per_sku)
            lg.log_table("test/worst_skus", columns=columns, data=rows)
        if getattr(lg, "skuvision_log_model", False):
            log_model_artifact(lg, model, metrics, Path(output_dir))


def log_model_artifact(lg, model, metrics: dict, output_dir: Path) -> None:
    """One ``model`` artifact: the best checkpoint (else last.ckpt) and ``label_map.json``."""
    import wandb

    ckpt = metrics.get("best_checkpoint") or str(output_dir / "checkpoints" / "last.ckpt")
    if not Path(ckpt).is_file():
        log.warning("W&B log_model: no checkpoint at %s; nothing uploaded", ckpt)
        return

    files = write_model_artifacts(ckpt, output_dir, copy_checkpoint=False)
    run = lg.experiment
    keep = ("val/top1", "test/top1", "test/top5", "params/trainable", "freeze_depth")
    artifact = wandb.Artifact(
        f"model-{run.id}",
        type="model",
        metadata={k: metrics[k] for k in keep if k in metrics} | {"backbone": model.hparams.backbone},
    )
    for name, path in files.items():
        artifact.add_file(str(path), name=name)
    run.log_artifact(artifact, aliases=["best", "latest"])
    log.info("W&B: model artifact model-%s (model.ckpt from %s, label_map.json)", run.id, ckpt)
