"""Library noise off the console, so a run's last lines are its result and where it went.

Each entry is a message that says nothing actionable about a skuvision run, measured on a real
quickstart: litdata's per-dataset INFO lines (one per dataset and worker), Lightning's advert for
its cloud logger, and warnings about things the data module handles on purpose (litdata's sized
IterableDataset, tiny epochs shorter than ``log_every_n_steps``, a torch-internal deprecation, the
frozen backbone stages the model keeps in eval mode so their BatchNorm statistics stay ImageNet's).
Everything else -- real warnings included -- still shows.
"""

from __future__ import annotations

import logging
import warnings

_LIGHTNING_MESSAGES = (
    r"Your `IterableDataset` has `__len__` defined",  # litdata sizes each rank's share itself
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Found \d+ module\(s\) in eval mode at the start of training",  # the frozen backbone stages, on purpose
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


class _DropSmallCacheAdvice(logging.Filter):
    """litdata's advice against a ``max_cache_size`` under 25 GB, once per dataset opened: the replay
    reader and the partition merge set small caps on purpose (bounded disk), one dataset per split."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("The provided `max_cache_size` is less than")


def quiet_library_noise() -> None:
    """Idempotent; called by the train and onboarding tasks in every process (ranks included)."""
    logging.getLogger("litdata").setLevel(logging.WARNING)
    dataset_logger = logging.getLogger("litdata.streaming.dataset")
    if not any(isinstance(f, _DropSmallCacheAdvice) for f in dataset_logger.filters):
        dataset_logger.addFilter(_DropSmallCacheAdvice())
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    for message in _LIGHTNING_MESSAGES:
        warnings.filterwarnings("ignore", message=message)
