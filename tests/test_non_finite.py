"""A NaN loss stops the run at that step, before the optimiser applies it; ``last.ckpt``
stays the last good state and never holds NaN weights.

The NaN is real: ``helpers.fault_probe.PoisonAt`` fills one training batch with NaN, so the model
computes a NaN loss and NaN gradients through the real forward and backward.
"""

from __future__ import annotations

import torch

from helpers import QUIET, TINY_MODEL, run_cli, subprocess_pythonpath

RUN = [
    *TINY_MODEL,
    "data.batch_size=4",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    *QUIET,
    "callbacks.resume_checkpoint.every_n_train_steps=2",
]


def test_nan_loss_stops_at_that_step_and_last_ckpt_keeps_the_last_good_weights(tiny_shards, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "train.py",
        f"hydra.run.dir={run_dir}",
        f"data.root={tiny_shards}",
        *RUN,
        "+callbacks.fault._target_=helpers.fault_probe.PoisonAt",
        "+callbacks.fault.step=5",
        env={"PYTHONPATH": subprocess_pythonpath()},
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("skuvision: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "loss is nan at step 5 (epoch 0, batch 5)" in lines[0] and "last.ckpt" in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4  # the save before the NaN; nothing was saved after it
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())
    assert not (run_dir / "metrics.json").exists()  # a failed run reports no result
