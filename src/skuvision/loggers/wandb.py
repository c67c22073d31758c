"""Weights & Biases for sweeps: one run per Hydra job, grouped by sweep, named by what the sweep varies.

``conf/logger/wandb.yaml`` instantiates :func:`wandb_logger`. Decisions made here, not in YAML,
because they depend on the environment and on Hydra's runtime state:

* **mode**: ``WANDB_MODE`` if set; else ``online`` when ``WANDB_API_KEY`` is set; else ``offline``
  (runs land in ``<run dir>/wandb/offline-run-*``; ``wandb sync`` uploads them later). Never
  interactive: online without a key stops with one line instead of a login prompt.
* **group**: ``logger.wandb.group``, else ``$WANDB_RUN_GROUP`` (a launcher that fans a sweep out
  over machines sets it), else the sweep id ``<task name>-<sweep dir name>``, shared by every job
  of one ``-m`` run; a plain run gets its own run dir's name.
* **name**: ``logger.wandb.name``, else ``$WANDB_NAME``, else the job's values of the swept keys
  (``freeze_depth=3``), read from the sweep's ``multirun.yaml`` and ``hydra.sweeper.params``; a plain
  run is named by its overrides. Launchers that re-compose a job in child processes pass
  :func:`job_env` so the children land in the sweep's group under the job's name.

The key itself is never read into anything we write: wandb reads ``WANDB_API_KEY`` on its own, and
:func:`plain_config` drops secret-looking keys and values before the config goes to W&B.
"""

from __future__ import annotations

import logging
import netrc
import os
import re
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from skuvision.config.overrides import parse
from skuvision.errors import ConfigError

# Deferred on purpose: wandb is slow to import and loads only when a run logs to it.

log = logging.getLogger(__name__)

SECRET_KEY = re.compile(r"(api[_-]?key|secret|password|token|credential)", re.IGNORECASE)
# overrides that say where things are, not what was trained: left out of plain runs' names
_NAME_NOISE = (
    "hydra.",
    "paths.",
    "logger.",
    "callbacks.",
    "data.root",
    "data.num_workers",
    "data.cache_dir",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "export_backbone",
    "ckpt_path",
)


def resolve_mode(mode: str | None = None) -> str:
    """``online``/``offline``/``disabled``: explicit config, else WANDB_MODE, else online iff a key is set."""
    drop_empty_env()
    mode = mode or os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    if mode not in ("online", "offline", "disabled"):
        raise ConfigError(f"W&B mode {mode!r} (logger.wandb.mode or WANDB_MODE): use online, offline or disabled")
    if mode == "online" and not has_api_key():
        raise ConfigError(
            "W&B mode is online but no API key: set WANDB_API_KEY (or run `wandb login`), "
            "or unset WANDB_MODE to log offline"
        )
    return mode


def drop_empty_env() -> None:
    """``WANDB_MODE=`` (set but empty) means unset to a shell user; wandb itself rejects it."""
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_RUN_GROUP"):
        if os.environ.get(key) == "":
            del os.environ[key]


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = re.sub(r"^https?://", "", os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


# -- Hydra runtime -> group / name ------------------------------------------------------------------
def _hydra_cfg():
    return HydraConfig.get() if HydraConfig.initialized() else None


def _select(hc, key: str) -> Any:
    """A Hydra runtime value, or None where it is absent (configs composed outside @hydra.main)."""
    try:
        return OmegaConf.select(hc, key, default=None, throw_on_missing=False)
    except OmegaConfBaseException:
        return None


def _is_multirun(hc) -> bool:
    return hc is not None and _select(hc, "mode") == RunMode.MULTIRUN and bool(_select(hc, "sweep.dir"))


def sweep_id(hc=None, prefix: str | None = None, run_dir: str | None = None) -> str | None:
    """``<prefix>-<sweep dir name>`` for every job of a multirun; ``<prefix>-<run dir name>`` otherwise.

    ``prefix`` is the task name (``finetune_synthetic``), else Hydra's job name (``train``).
    """
    hc = hc if hc is not None else _hydra_cfg()
    job = prefix or (_select(hc, "job.name") if hc is not None else None) or "train"
    if _is_multirun(hc):
        return f"{job}-{Path(_select(hc, 'sweep.dir')).name}"
    run_dir = (_select(hc, "runtime.output_dir") if hc is not None else None) or run_dir
    return f"{job}-{Path(run_dir).name}" if run_dir else None


def swept_keys(hc) -> list[str]:
    """Keys a multirun varies: ``hydra.sweeper.params`` plus the sweep overrides of its command line."""
    keys = [str(k) for k in (_select(hc, "sweeper.params") or {})]
    multirun_yaml = Path(_select(hc, "sweep.dir")) / "multirun.yaml"
    if multirun_yaml.is_file():
        command_line = OmegaConf.load(multirun_yaml).hydra.overrides.task

        keys += [o.key_or_group for o in parse(command_line) if o.is_sweep_override()]
    return list(dict.fromkeys(keys))


def _short_names(keys: list[str]) -> dict[str, str]:
    """``model.freeze_depth`` -> ``freeze_depth`` unless two keys would share a short name."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def run_name(hc=None, max_len: int = 120) -> str | None:
    hc = hc if hc is not None else _hydra_cfg()
    if hc is None:
        return None

    task = [o for o in parse(_select(hc, "overrides.task") or []) if not o.is_delete()]
    keys = swept_keys(hc) if _is_multirun(hc) else []
    chosen = [o for o in task if o.key_or_group in keys]
    if not chosen:  # a plain run: what was trained, not where things live
        chosen = [
            o for o in task if not o.key_or_group.startswith(_NAME_NOISE) and "/" not in o.get_value_element_as_str()
        ]
    short = _short_names([o.key_or_group for o in chosen])
    name = ""
    for o in chosen:
        part = f"{short[o.key_or_group]}={o.get_value_element_as_str()}"
        if len(name) + len(part) + 1 > max_len:
            break
        name = f"{name},{part}" if name else part
    return name or None


def job_env(prefix: str | None = None) -> dict[str, str]:
    """``WANDB_RUN_GROUP``/``WANDB_NAME`` of this Hydra job, for a launcher whose child processes compose
    the job again in run mode (per-job DDP ranks, a remote container) and so cannot see the sweep."""
    hc = _hydra_cfg()
    env = {"WANDB_RUN_GROUP": sweep_id(hc, prefix), "WANDB_NAME": run_name(hc)}
    return {k: v for k, v in env.items() if v}


def job_overrides(hc=None) -> list[str]:
    hc = hc if hc is not None else _hydra_cfg()
    return [str(o) for o in (_select(hc, "overrides.task") or [])] if hc is not None else []


# -- the logger ------------------------------------------------------------------------------------------
def wandb_logger(
    project: str = "skuvision",
    entity: str | None = None,
    tags: list[str] | None = None,
    sweep_prefix: str | None = None,
    group: str | None = None,
    name: str | None = None,
    job_type: str = "train",
    save_dir: str = ".",
    mode: str | None = None,
    log_model: bool = False,
    notes: str | None = None,
):
    """A Lightning ``WandbLogger`` with mode/group/name decided as the module docstring says.

    ``log_model`` is kept on the logger for :func:`skuvision.loggers.wandb_report.log_model_artifact`
    (best checkpoint + label map in one artifact), not passed to Lightning, whose artifact holds the
    checkpoint alone.
    """
    hc = _hydra_cfg()
    resolved_mode = resolve_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    group = group or os.environ.get("WANDB_RUN_GROUP") or sweep_id(hc, sweep_prefix, save_dir)
    name = name or os.environ.get("WANDB_NAME") or run_name(hc)
    import wandb

    logger = WandbLogger(
        name=name,
        save_dir=save_dir,
        project=project,
        entity=entity or None,
        tags=list(tags or []) or None,
        group=group,
        job_type=job_type,
        mode=resolved_mode,
        notes=notes,
        log_model=False,
        # no run summary/history table on the console after the result: it is in the run dir (wandb/)
        settings=wandb.Settings(quiet=True),
    )
    getattr(logger, "_wandb_init", {}).pop("anonymous", None)  # deprecated in wandb; Lightning always passes it
    logger.skuvision_log_model = bool(log_model)
    if rank_zero_only.rank == 0:  # the other ranks get Lightning's dummy experiment and log nothing
        log.info(
            "W&B: %s run, project=%s group=%s name=%s, files under %s/wandb",
            resolved_mode,
            project,
            group,
            name,
            save_dir,
        )
    return logger


def plain_config(cfg) -> dict[str, Any]:
    """The resolved config as plain nested data (W&B shows ``model.freeze_depth`` columns), secrets dropped."""
    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    secret_values = {v for k, v in os.environ.items() if SECRET_KEY.search(k) and v and len(v) >= 6}

    def scrub(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: scrub(v) for k, v in node.items() if not SECRET_KEY.search(str(k))}
        if isinstance(node, list):
            return [scrub(v) for v in node]
        if isinstance(node, str) and any(s in node for s in secret_values):
            return "<redacted>"
        return node

    return scrub(data)
