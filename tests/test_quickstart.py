import json

import pytest

from helpers import run_cli


@pytest.mark.slow
def test_quickstart_learns_the_synthetic_catalogue(tmp_path):
    """`python train.py` on a fresh data dir: generates, shards, trains, reaches >= 0.90 test top-1."""
    result = run_cli(
        "train.py",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.data_dir={tmp_path / 'data'}",
        "callbacks.progress_bar=null",
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test/top1"] >= 0.90, metrics
    assert (tmp_path / "data" / "quickstart" / "shards" / "manifest.json").is_file()
    assert "[skuvision] test" in result.stdout + result.stderr
