"""What a SageMaker training job runs on every rank: ``python -m skuvision.entry.sagemaker_job --overrides '<json>'``.

The job's hyperparameters are ``overrides``, the JSON list of Hydra override
strings of one sweep job (from ``--overrides`` or, failing that, ``SM_HPS``), and, for an
onboarding sweep, ``config_name=onboard``. Every rank runs the same task as
``python train.py <overrides>`` (or ``python onboard.py``) — the same ``@hydra.main``, config
tree and task function (``skuvision.entry.tasks``) — with exactly those overrides plus
``env=sagemaker`` (onboarding: ``paths=sagemaker``) (channel data, checkpoints in
``/opt/ml/checkpoints`` with resume, ``auto`` devices/nodes; see
``conf/env/sagemaker.yaml``) and Hydra pins that are not task config: one
``hydra.run.dir`` for all ranks, and only rank 0 writing ``.hydra/`` and the log
file. So a sweep job resolves to the same config locally and on SageMaker
except for ``paths`` and what ``conf/env/sagemaker.yaml`` sets.

After training, rank 0 copies the model artefacts into ``SM_MODEL_DIR`` (uploaded
as model.tar.gz): ``model.ckpt`` (the best checkpoint, the one tested),
``label_map.json`` and ``metrics.json``, plus its fp32 ONNX export (``model.onnx``,
``labels.json``, ``preprocess.json``, ``model_card.md``, ``export.json``: what
``skuvision export`` writes), so model.tar.gz is deployable as it is.

On one multi-GPU host with no launcher (a job without ``distribution``) the
entry starts torchrun over ``SM_NUM_GPUS`` ranks itself, rather than let
Lightning re-execute ``sys.argv``. A SIGTERM (spot interruption) ends the
process with status 143 after the preemption checkpoint is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from lightning.pytorch.utilities.exceptions import SIGTERMException

from skuvision.config.compose import config_dir
from skuvision.config.overrides import sets
from skuvision.distributed.environment import SageMakerEnvironment, launcher_rank
from skuvision.distributed.launch import rank_overrides, run_hydra_task, run_ranks, torchrun_command
from skuvision.entry.tasks import Task, task_for
from skuvision.errors import ConfigError, UserError, exit_on_user_error
from skuvision.export.bundle import export_checkpoint
from skuvision.files import write_json
from skuvision.model.artifacts import write_model_artifacts
from skuvision.sagemaker import secrets
from skuvision.sagemaker.overrides import EXAMPLE, decode_overrides

log = logging.getLogger("skuvision.entry.sagemaker_job")

MODULE = "skuvision.entry.sagemaker_job"
SIGTERM_STATUS = 143


def _arguments(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--overrides", default=None, help=f"JSON list of Hydra overrides, e.g. {EXAMPLE}")
    parser.add_argument(
        "--config_name", "--config-name", default=None, help="the task's config: train (default) or onboard"
    )
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        log.warning("ignoring arguments other than --overrides and --config_name: %s", " ".join(unknown))
    return args


def _hyperparameters() -> dict:
    hps = os.environ.get("SM_HPS", "")
    try:
        return json.loads(hps) if hps else {}
    except json.JSONDecodeError:
        raise UserError(f"SM_HPS={hps[:200]!r}: not a JSON object of hyperparameters") from None


def read_config_name(argv: list[str] | None = None) -> str:
    """The job's config (``train`` or ``onboard``): from ``--config_name`` or SM_HPS; a training job sends none."""
    name = _arguments(argv).config_name
    if name is None:
        hps = _hyperparameters()
        name = hps.get("config_name") if isinstance(hps, dict) else None
    return str(name or "train")


def read_overrides(argv: list[str] | None = None) -> list[str]:
    raw = _arguments(argv).overrides
    if raw is None:
        hps = _hyperparameters()
        if not isinstance(hps, dict):
            raise UserError(f"SM_HPS={str(hps)[:200]!r}: not a JSON object of hyperparameters")
        raw = hps.get("overrides")
    overrides = decode_overrides(raw) if raw is not None else []

    for group in ("env", "paths"):
        if (override := sets(overrides, group)) is not None:
            raise ConfigError(
                f"overrides: {override!r}: the container selects env=sagemaker (and its paths) itself; "
                "override single keys instead (e.g. paths.checkpoint_dir=...)"
            )
    return overrides


def container_overrides(task: Task, overrides: list[str]) -> list[str]:
    """What the container adds: its env/paths, and the training channel as data.root when the job names none."""
    added = list(task.container_overrides)
    if task.data_root_default and sets(overrides, "data.root") is None:
        added.append(f"data.root={task.data_root_default}")
    return added


def run_dir() -> str:
    """One directory all ranks of the job agree on without talking to each other."""
    base = os.environ.get("SM_OUTPUT_DATA_DIR") or "/opt/ml/output/data"
    return os.environ.get("SKUVISION_RUN_DIR") or str(Path(base) / "run")


def export_model_artifacts(run_directory: str | Path, model_dir: str | Path) -> list[Path]:
    """Best checkpoint, label map, metrics and the fp32 ONNX export into ``model_dir`` (rank 0, once)."""
    run_directory, model_dir = Path(run_directory), Path(model_dir)
    metrics_path = run_directory / "metrics.json"
    if not metrics_path.is_file():
        raise UserError(f"{metrics_path}: the run wrote no metrics.json; nothing to export to {model_dir}")
    metrics = json.loads(metrics_path.read_text())
    best = metrics.get("best_checkpoint")
    model_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if best and Path(best).is_file():
        written += list(write_model_artifacts(best, model_dir).values())
        metrics["best_checkpoint"] = "model.ckpt"
        written += _export_onnx(model_dir / "model.ckpt", model_dir, run_directory)
    else:
        log.warning("no best checkpoint (%s); model.tar.gz holds metrics only", best)
    written.append(write_json(model_dir / "metrics.json", metrics, sort_keys=True, default=str))
    return written


def _export_onnx(ckpt: Path, model_dir: Path, run_directory: Path) -> list[Path]:
    """The counter-side files next to the checkpoint. A failed export is logged, not fatal: the trained
    checkpoint is uploaded either way and ``skuvision export`` can be run on it later."""
    try:
        summary = export_checkpoint(ckpt, model_dir, force=True, run_dir=run_directory)
    except Exception as exc:  # noqa: BLE001 - keep the job's model.ckpt whatever the exporter does
        log.error(
            "ONNX export into %s failed (%s: %s); model.tar.gz holds the checkpoint only; run "
            "`skuvision export model.ckpt --out DIR --image-size PX` on it",
            model_dir,
            type(exc).__name__,
            exc,
        )
        return []
    log.info(
        "ONNX export: max |logit diff| vs PyTorch %.1e (%s exporter)",
        summary["parity_max_abs_diff"],
        summary["exporter"],
    )
    return [
        model_dir / name for name in ("model.onnx", "labels.json", "preprocess.json", "model_card.md", "export.json")
    ]


def _start_own_ranks(overrides: list[str], config_name: str) -> int | None:
    """Exit status of a torchrun over this host's GPUs, when no launcher started the ranks; else None."""
    gpus = int(os.environ.get("SM_NUM_GPUS", "0") or 0)
    if not SageMakerEnvironment.detect() or SageMakerEnvironment.launched() or gpus <= 1:
        return None
    if SageMakerEnvironment().num_hosts > 1:
        return None  # SageMakerEnvironment.validate_settings says what to do
    log.info("no launcher: starting %d ranks with torchrun", gpus)
    return run_ranks(
        torchrun_command(gpus, MODULE, ["--overrides", json.dumps(overrides), "--config_name", config_name])
    )


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    overrides = read_overrides(argv)  # bad input fails before the heavy imports
    config_name = read_config_name(argv)
    task = task_for(config_name)

    status = _start_own_ranks(overrides, config_name)
    if status is not None:
        sys.exit(status)
    secrets.export_wandb_key()  # the W&B key from Secrets Manager into this process's environment
    rank, directory = launcher_rank(), run_dir()
    if rank == 0:
        log.info("%s job, overrides: %s; run dir %s", config_name, json.dumps(overrides), directory)

    try:
        run_hydra_task(
            task.run,
            [*overrides, *container_overrides(task, overrides), *rank_overrides(directory, rank, job_files=True)],
            str(config_dir()),
            config_name,
        )
    except SIGTERMException:
        log.info("rank %d stopped by SIGTERM", rank)
        sys.exit(SIGTERM_STATUS)
    if rank == 0:
        model_dir = os.environ.get("SM_MODEL_DIR") or "/opt/ml/model"
        for path in export_model_artifacts(directory, model_dir):
            log.info("model artefact: %s", path)


if __name__ == "__main__":
    main()
