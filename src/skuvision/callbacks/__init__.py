"""Lightning callbacks, one job each; ``conf/callbacks/*.yaml`` lists them by these paths.

- :class:`EpochMetricsSync` -- put first in every run by the train task: epoch metrics synced on all ranks
  before any other callback (see :mod:`skuvision.distributed` for the rule it keeps);
- :class:`TrainingReport` -- images/s and the parsable ``[skuvision] epoch=...`` summary line;
- :class:`ResumeCheckpoint` -- ``last.ckpt`` after every epoch and on SIGTERM, in every environment, with the random states;
- :class:`StopOnNonFinite` -- stop at a NaN/inf loss or gradient before the optimiser step;
- :class:`SKUReport` -- per_sku.csv and confusions.csv of the test split.
"""

from skuvision.callbacks.collectives import EpochMetricsSync
from skuvision.callbacks.finite import StopOnNonFinite
from skuvision.callbacks.resume import ResumeCheckpoint
from skuvision.callbacks.sku_report import SKUReport
from skuvision.callbacks.summary import SUMMARY_PREFIX, TrainingReport

__all__ = ["SUMMARY_PREFIX", "EpochMetricsSync", "ResumeCheckpoint", "SKUReport", "StopOnNonFinite", "TrainingReport"]
