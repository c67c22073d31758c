"""scripts/benchmark_train.py in its tiny CPU configuration: every variant and the end-to-end path run."""

from __future__ import annotations

import sys

import pytest

from helpers import ROOT


@pytest.mark.slow  # compiles the trainable part with inductor (~1 min on 2 cores)
def test_benchmark_train_tiny_runs_every_variant_and_the_shard_path():
    sys.path.insert(0, str(ROOT / "scripts"))
    import benchmark_train

    args = benchmark_train.parse_args(["--tiny", "--depths", "5", "--steps", "2", "--warmup", "1", "--no-markdown"])
    results = benchmark_train.run(args)
    rows = results["model_only"]
    assert [r["variant"] for r in rows] == ["a", "b", "c", "d"]
    assert all(r["img_s"] > 0 and r["gflop_per_img"] > 0 for r in rows)
    assert len({round(r["gflop_per_img"], 6) for r in rows}) == 1  # FLOPs counted from the same model
    assert [r["augment_on_device"] for r in results["end_to_end"]] == [False, True]
    assert all(0 < r["ratio_to_model_only"] for r in results["end_to_end"])
    text = benchmark_train.table(results)
    assert "(a) fp32 NCHW eager" in text and "tiny CPU configuration" in text
