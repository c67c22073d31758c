"""Test helpers (not fixtures: those stay in conftest.py), importable as ``helpers`` from tests/ on sys.path.

Processes a test starts find them with ``PYTHONPATH=tests`` (e.g. ``helpers.fault_probe.KillAt``).
"""

from helpers.cli import one_error_line, run_cli, shards_build_cli, subprocess_pythonpath
from helpers.configs import FAST_TRAIN, QUIET, ROOT, TINY_IMAGES, TINY_MODEL, TINY_SKUS, compose_train_cfg

__all__ = [
    "FAST_TRAIN",
    "QUIET",
    "ROOT",
    "TINY_IMAGES",
    "TINY_MODEL",
    "TINY_SKUS",
    "compose_train_cfg",
    "one_error_line",
    "run_cli",
    "shards_build_cli",
    "subprocess_pythonpath",
]
