"""per_sku.csv and confusions.csv of the test split, next to metrics.json (rank 0, after the test loop).

The module gathers the counts on every rank in its own ``on_test_epoch_end`` (a collective);
this callback only writes, so it issues no collective and may be dropped from a config freely.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from skuvision.report.confusions import write_from_tensors
from skuvision.report.per_sku import write_per_sku_report


class SKUReport(L.Callback):
    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_test_end(self, trainer, pl_module) -> None:
        results = getattr(pl_module, "test_results", None)
        if not trainer.is_global_zero or not results:
            return

        write_per_sku_report(self.dirpath / "per_sku.csv", results["correct"], results["total"], pl_module.label_map)
        write_from_tensors(self.dirpath, results["errors"], results["total"].long().tolist(), pl_module.label_map)
