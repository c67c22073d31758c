"""Find the runs to compare: job dirs of a Hydra multirun, single run dirs, or a W&B group.

A run is its overrides (``.hydra/overrides.yaml``, or the ``overrides`` list the W&B logger adds
to every run's config) plus its ``metrics.json`` (or the W&B run summary, which carries the same
keys). A job dir without ``metrics.json`` is kept and marked, so a failed or running job shows up
as a row instead of silently vanishing from the comparison.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from skuvision.config.overrides import as_dict
from skuvision.errors import DataError, UserError
from skuvision.loggers.wandb import drop_empty_env, has_api_key

# Deferred on purpose: wandb is slow to import and loads only when a run logs to it.

OVERRIDES = Path(".hydra") / "overrides.yaml"


@dataclass
class Run:
    label: str  # job dir (relative) or W&B run name
    overrides: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    source: str = ""  # the run dir or W&B URL


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["model.freeze_depth=3", "sweep=freeze_depth", "~callbacks.x"]`` -> ``{key: value}``."""
    return as_dict(items)


def _read_overrides(run_dir: Path) -> list[str]:
    path = run_dir / OVERRIDES
    if not path.is_file():
        return []
    try:
        return [str(x) for x in OmegaConf.load(path)]
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user-facing problem
        raise DataError(f"{path}: unreadable ({str(exc).splitlines()[0]}); is this a Hydra run dir?") from None


def load_run(run_dir: Path, label: str) -> Run:
    run = Run(label=label, overrides=parse_overrides(_read_overrides(run_dir)), source=str(run_dir))
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        try:
            run.metrics = json.loads(metrics_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{metrics_path}: not valid JSON ({exc.msg}); delete it or rerun the job") from None
    else:
        run.status = "no metrics.json (failed or still running)"
    return run


def _job_dirs(root: Path) -> list[Path]:
    if (root / "metrics.json").is_file() or (root / OVERRIDES).is_file():
        return [root]
    found = {p.parent.parent for p in root.glob("**/.hydra/overrides.yaml")}
    found |= {p.parent for p in root.glob("**/metrics.json")}
    return sorted(found)


def load_local_runs(dirs: list[str | Path]) -> list[Run]:
    """Every run under the given dirs: a multirun dir expands to its job dirs."""
    runs: list[Run] = []
    for d in dirs:
        root = Path(d).expanduser()
        if not root.is_dir():
            raise DataError(f"{d}: no such directory; pass a multirun dir (logs/<task>/multiruns/<time>) or run dirs")
        jobs = _job_dirs(root)
        if not jobs:
            raise DataError(
                f"{d}: no runs under it (no metrics.json or .hydra/overrides.yaml); "
                "pass a multirun dir (logs/<task>/multiruns/<time>) or run dirs"
            )
        for job in jobs:
            label = str(job.relative_to(root)) if job != root else root.name
            runs.append(load_run(job, label if len(dirs) == 1 else f"{root.name}/{label}".rstrip("/.")))
    return runs


def load_wandb_runs(path: str, group: str) -> list[Run]:
    """The runs of one W&B group through the public API (online only)."""
    drop_empty_env()

    if path.count("/") != 1 or not all(path.split("/")):
        raise UserError(f"--wandb {path}: expected ENTITY/PROJECT, e.g. --wandb my-team/skuvision")
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun", "disabled"):
        raise UserError(
            f"compare --wandb reads the W&B API, but WANDB_MODE={os.environ['WANDB_MODE']}: unset it, "
            "or compare the local run dirs (skuvision compare logs/<task>/multiruns/<time>)"
        )
    if not has_api_key():
        raise UserError(
            "compare --wandb needs a W&B API key: set WANDB_API_KEY or run `wandb login` "
            "(offline runs: `wandb sync <run dir>/wandb/offline-run-*` first, or compare the local dirs)"
        )
    import wandb

    try:
        api_runs = list(wandb.Api(timeout=30).runs(path, filters={"group": group}))
    except Exception as exc:  # noqa: BLE001 - network, auth, unknown project: one line, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"W&B API {path} (group {group}): {first}") from None
    if not api_runs:
        raise UserError(
            f"W&B {path}: no runs in group {group!r}; train.py logs the group "
            "(`W&B: ... group=...`) and every job of one -m sweep shares it"
        )
    return [wandb_run_to_run(r) for r in api_runs]


def wandb_run_to_run(api_run: Any) -> Run:
    """A ``wandb.apis.public.Run`` (anything with name/config/summary/state/url) -> Run."""
    config = dict(api_run.config or {})
    summary = getattr(api_run.summary, "_json_dict", None) or dict(api_run.summary or {})
    metrics = {k: v for k, v in summary.items() if not str(k).startswith("_")}
    state = getattr(api_run, "state", "finished")
    return Run(
        label=str(api_run.name or api_run.id),
        overrides=parse_overrides(config.get("overrides") or []),
        metrics=metrics,
        status="ok" if state == "finished" else str(state),
        source=getattr(api_run, "url", ""),
    )
