"""Compose the project's Hydra config outside ``@hydra.main`` (CLI tools, container entry, tests)."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from skuvision.errors import ConfigError

CHECKOUT_CONF = Path(__file__).resolve().parents[3] / "conf"  # <checkout>/src/skuvision/config/compose.py


def config_dir() -> Path:
    """``$SKUVISION_CONF``, else ``./conf``, else the ``conf/`` of the checkout this package is installed from.

    conf/ is the project's, not the package's (experiments are edited there), so a wheel installed
    without the checkout needs ``SKUVISION_CONF``; the SageMaker container sets it to the uploaded conf/.
    """
    chosen = os.environ.get("SKUVISION_CONF")
    if chosen:
        if not (Path(chosen) / "train.yaml").is_file():
            raise ConfigError(f"SKUVISION_CONF={chosen}: no train.yaml there; point it at the project's conf/")
        return Path(chosen).resolve()
    for candidate in (Path.cwd() / "conf", CHECKOUT_CONF):
        if (candidate / "train.yaml").is_file():
            return candidate.resolve()
    raise ConfigError("cannot find conf/train.yaml: run from the project root or set SKUVISION_CONF=/path/to/conf")


def compose(overrides: list[str] | None = None, return_hydra_config: bool = False, config_name: str = "train"):
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose(config_name, overrides=list(overrides or []), return_hydra_config=return_hydra_config)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"bad override: {str(exc).splitlines()[0]}") from None
