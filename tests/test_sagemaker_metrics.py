"""The SageMaker metric definitions scrape what a real training run prints.

SageMaker applies each definition's regex to the job's log lines and keeps the first group; a
regex that matches nothing leaves the metric silently empty in the console, so the lines come
from a real (tiny) training run, not from a hand-written sample.
"""

from __future__ import annotations

import json
import logging
import re

import pytest

from skuvision.sagemaker.job import metric_definitions

from helpers import FAST_TRAIN, compose_train_cfg


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_metric_regexes_match_the_lines_a_training_run_prints(tiny_shards, tmp_path):
    from skuvision.train import run

    handler = Lines()
    logger = logging.getLogger("skuvision.callbacks.summary")  # the summary line's logger
    logger.addHandler(handler)
    try:
        run(compose_train_cfg(tmp_path, [f"data.root={tiny_shards}", *FAST_TRAIN, "trainer.max_epochs=2"]))
    finally:
        logger.removeHandler(handler)
    printed = [line for line in handler.lines if line.startswith("[skuvision]")]
    epochs = [line for line in printed if line.startswith("[skuvision] epoch=")]
    tests = [line for line in printed if line.startswith("[skuvision] test ")]
    assert len(epochs) == 2 and len(tests) == 1, printed

    values: dict[str, list[float]] = {}
    for definition in metric_definitions():
        regex = re.compile(definition["Regex"])
        assert regex.groups == 1, definition
        values[definition["Name"]] = [float(m.group(1)) for line in printed if (m := regex.search(line))]
    for name in ("train/loss", "train/images_per_sec", "val/loss", "val/top1", "val/top5"):
        assert len(values[name]) == 2, (name, printed)  # once per epoch, never from the test line
    assert len(values["test/top1"]) == len(values["test/top5"]) == 1

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert values["test/top1"][0] == pytest.approx(metrics["test/top1"], abs=1e-4)
    assert values["test/top5"][0] == pytest.approx(metrics["test/top5"], abs=1e-4)
    assert max(values["val/top1"]) == pytest.approx(metrics["val/top1"], abs=1e-4)  # the best epoch, tested
    assert all(v > 0 for v in values["train/images_per_sec"] + values["train/loss"])
