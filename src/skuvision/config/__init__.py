"""The config tree's one source of truth outside YAML: composition, override parsing and validation."""

from skuvision.config.compose import compose, config_dir
from skuvision.config.schema import validate

__all__ = ["compose", "config_dir", "validate"]
