"""The ``onboard:`` block of conf/onboard.yaml, typed and checked: a bad value is one line naming the key.

Defaults live in conf/onboard.yaml only; this schema has none, so a key missing from the config
is an error here rather than a second default that could disagree with the YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from skuvision.errors import ConfigError
from skuvision.model.ridge import NONLINEARITIES

STRATEGIES = ("closed_form", "finetune")
SOLVERS = ("mean", "ridge")


@dataclass(frozen=True)
class OnboardSettings:
    source: str  # onboard.from (a Python keyword)
    strategy: str
    solver: str
    old_tolerance: float
    ridge: Optional[float]
    ridge_grid: list[float]
    projection: int
    projection_seed: int
    projection_nonlinearity: str
    replay_per_sku: int
    augmented_copies: int
    epochs: int
    lr: float
    train_old_rows: bool
    base: Optional[str]
    fallback_image_size: int
    seed: int
    test: bool


def _values(cfg: DictConfig) -> dict:
    node = cfg.get("onboard")
    if node is None:
        raise ConfigError("onboard: missing; run onboarding with `python onboard.py` (config conf/onboard.yaml)")
    try:
        values = OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:
        key = f"onboard.{exc.full_key.split('.')[-1]}" if exc.full_key else "onboard"
        hint = " of last month's model" if key == "onboard.from" else ""
        raise ConfigError(f"{key} is required: pass {key}=...{hint}") from None
    values["source"] = values.pop("from", None)
    names = {f.name for f in fields(OnboardSettings)}
    for key in values:
        if key not in names:
            raise ConfigError(f"onboard.{key}: unknown key; see conf/onboard.yaml for the settings onboarding reads")
    for key in names - set(values):
        raise ConfigError(f"onboard.{'from' if key == 'source' else key}: missing; conf/onboard.yaml sets it")
    return values


def _typed(values: dict) -> OnboardSettings:
    try:
        typed = OmegaConf.merge(OmegaConf.structured(OnboardSettings), values)
    except Exception as exc:  # noqa: BLE001 - omegaconf's validation errors share no useful base
        key = getattr(exc, "full_key", "") or ""
        key = "from" if key == "source" else key
        raise ConfigError(f"onboard.{key}: {str(exc).splitlines()[0]}") from None
    return OnboardSettings(**OmegaConf.to_container(typed))


def read_settings(cfg: DictConfig) -> OnboardSettings:
    """``cfg.onboard`` as ``OnboardSettings``; ConfigError naming the first bad key."""
    ob = _typed(_values(cfg))
    if not ob.source:
        raise ConfigError(
            "onboard.from is required: pass onboard.from=PATH/last.ckpt (local or s3://) of last month's model"
        )
    if ob.strategy not in STRATEGIES:
        raise ConfigError(f"onboard.strategy={ob.strategy}: use {' or '.join(STRATEGIES)}")
    if ob.solver not in SOLVERS:
        raise ConfigError(f"onboard.solver={ob.solver}: use {' or '.join(SOLVERS)}")
    at_least = {"replay_per_sku": 0, "augmented_copies": 1, "epochs": 1, "fallback_image_size": 32, "projection": 0}
    for key, low in at_least.items():
        if getattr(ob, key) < low:
            raise ConfigError(f"onboard.{key}={getattr(ob, key)}: must be >= {low}")
    for key in ("ridge", "lr"):
        if getattr(ob, key) is not None and getattr(ob, key) <= 0:
            raise ConfigError(f"onboard.{key}={getattr(ob, key)}: must be positive (ridge: or null, chosen on val)")
    if ob.ridge is None and (not ob.ridge_grid or min(ob.ridge_grid) <= 0):
        raise ConfigError(f"onboard.ridge_grid={ob.ridge_grid}: onboard.ridge=null needs positive candidates")
    if ob.projection and not (ob.strategy == "closed_form" and ob.solver == "ridge"):
        raise ConfigError(
            f"onboard.projection={ob.projection}: the projection needs onboard.strategy=closed_form onboard.solver=ridge"
        )
    if ob.projection_nonlinearity not in NONLINEARITIES:
        raise ConfigError(
            f"onboard.projection_nonlinearity={ob.projection_nonlinearity}: use {' or '.join(NONLINEARITIES)}"
        )
    if not 0.0 <= ob.old_tolerance <= 1.0:
        raise ConfigError(f"onboard.old_tolerance={ob.old_tolerance}: must be in [0, 1]")
    return ob


def projection_of(ob: OnboardSettings) -> dict | None:
    """The projection onboarding asks for, as the head's hyper-parameters and the ridge sums record it."""
    if not ob.projection:
        return None
    return {"dim": ob.projection, "seed": ob.projection_seed, "nonlinearity": ob.projection_nonlinearity}


def validate(cfg: DictConfig, need_data: bool = True) -> None:
    """What the SageMaker launcher checks before submitting an onboarding job (same signature as the train check)."""
    read_settings(cfg)
    if need_data and OmegaConf.is_missing(cfg.data, "root"):
        raise ConfigError("data.root is required: pass data.root=DIR, the delta shard set of `skuvision shards build`")
    if int(cfg.data.batch_size) < 1:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size}: must be positive")
