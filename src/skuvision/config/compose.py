"""Compose the project's Hydra config outside ``@hydra.main`` (CLI tools, container entry, tests)."""

from __future__ import annotations

import os
from pathlib import Path

from skuvision.errors import ConfigError


def config_dir() -> Path:
    """``$SKUVISION_CONF``, else ``./conf``, else the ``conf/`` next to this source tree."""
    candidates = [os.environ.get("SKUVISION_CONF"), Path.cwd() / "conf", Path(__file__).resolve().parents[2] / "conf"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "train.yaml").is_file():
            return Path(candidate).resolve()
    raise ConfigError("cannot find conf/train.yaml: run from the project root or set SKUVISION_CONF=/path/to/conf")


def compose(overrides: list[str] | None = None, return_hydra_config: bool = False, config_name: str = "train"):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose(config_name, overrides=list(overrides or []), return_hydra_config=return_hydra_config)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"bad override: {str(exc).splitlines()[0]}") from None
