"""The SageMaker container entry under simulated SageMaker variables, with real ranks (gloo underneath).

``tests/stubs`` holds a stand-in for ``smdistributed.dataparallel.torch.torch_smddp``
that registers the ``smddp`` c10d backend on top of gloo and refuses sub-groups, as
SMDDP does; it is on PYTHONPATH only where a test says so. ``helpers.distributed_probe``
(added with ``+callbacks.probe``) makes every rank report its ranks, backend and weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import ROOT, TINY_MODEL, subprocess_pythonpath
from helpers.distributed_probe import read_probes

TESTS = Path(__file__).resolve().parent
STUBS = TESTS / "stubs"
TINY = [
    "data.root=null",
    *TINY_MODEL,
    "data.batch_size=4",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
]  # default callbacks (progress bar included) and loggers (csv + W&B offline): what a real job runs
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
ENTRY = ["-m", "skuvision.entry.sagemaker_job"]


def sagemaker_env(tmp_path: Path, shards: Path, *, stub: bool, gpus: int = 2, **extra: str) -> dict:
    """What a SageMaker container sees, pointed at tmp_path."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SM_", "OMPI_", "TORCHELASTIC"))
        and k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(
        {
            "SM_HOSTS": '["algo-1"]',
            "SM_CURRENT_HOST": "algo-1",
            "SM_NUM_GPUS": str(gpus),
            "SM_CHANNEL_TRAIN": str(shards),
            "SM_MODEL_DIR": str(tmp_path / "model"),
            "SM_OUTPUT_DATA_DIR": str(tmp_path / "output"),
            "SKUVISION_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
            "SKUVISION_DATA_DIR": str(tmp_path / "data"),
            "PYTHONPATH": subprocess_pythonpath(*([STUBS] if stub else [])),
            "WANDB_MODE": "offline",
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
        }
    )
    env.update(extra)
    return env


def probe(tmp_path: Path) -> list[str]:
    return [
        "+callbacks.probe._target_=helpers.distributed_probe.RankProbe",
        f"+callbacks.probe.out_dir={tmp_path / 'probe'}",
    ]


def run(command: list[str], env: dict, timeout: int = 240) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    result.output = result.stdout + result.stderr  # type: ignore[attr-defined]
    return result


def overrides_arg(*overrides: str) -> list[str]:
    return ["--overrides", json.dumps(list(overrides))]


@pytest.mark.slow
def test_torchrun_two_ranks_train_over_smddp_and_export_the_model_once(tiny_shards, tmp_path):
    from skuvision.config.compose import compose

    overrides = [*TINY, "trainer=smddp", "trainer.max_epochs=2", *probe(tmp_path)]
    result = run([*TORCHRUN, *ENTRY, *overrides_arg(*overrides)], sagemaker_env(tmp_path, tiny_shards, stub=True))
    assert result.returncode == 0, result.output[-4000:]

    ranks = read_probes(tmp_path / "probe")
    assert [r["global_rank"] for r in ranks] == [0, 1] and [r["dist_rank"] for r in ranks] == [0, 1]
    assert {r["backend"] for r in ranks} == {"smddp"}
    assert {r["strategy"] for r in ranks} == {"SMDDPStrategy"} and {r["environment"] for r in ranks} == {
        "SageMakerEnvironment"
    }
    assert {(r["num_nodes"], r["num_devices"], r["world_size"]) for r in ranks} == {(1, 2, 2)}  # from SM_HOSTS/launcher
    assert ranks[0]["end_digest"] == ranks[1]["end_digest"] != ranks[0]["start_digest"]  # trained, and in sync

    model_dir = tmp_path / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == [  # + the fp32 ONNX export (issue 12): deployable as is
        "export.json",
        "label_map.json",
        "labels.json",
        "metrics.json",
        "model.ckpt",
        "model.onnx",
        "model_card.md",
        "preprocess.json",
    ]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    lr = compose(["trainer=smddp"]).model.optimizer.lr
    assert metrics["world_size"] == 2 and metrics["global_batch"] == 2 * 4  # 1 node x 2 ranks x per-rank batch
    assert metrics["lr/scaled"] == pytest.approx(lr * 8 / 256)
    assert metrics["best_checkpoint"] == "model.ckpt" and "test/top1" in metrics
    ckpt = torch.load(model_dir / "model.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["label_map"] == json.loads((model_dir / "label_map.json").read_text())

    run_dir = tmp_path / "output" / "run"  # one pinned run dir; only rank 0 wrote Hydra's files
    assert (run_dir / ".hydra" / "overrides.yaml").is_file() and (run_dir / "metrics.json").is_file()
    assert sorted(p.name for p in (tmp_path / "output").iterdir()) == ["run"]
    assert [p.name for p in (run_dir / "csv").iterdir()] == ["version_0"]
    assert "env=sagemaker" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "SMDDP unavailable" not in result.output


@pytest.mark.slow
def test_without_smddp_fallback_auto_trains_over_gloo_with_one_warning(tiny_shards, tmp_path):
    overrides = [*TINY, "trainer=smddp", *probe(tmp_path)]
    result = run([*TORCHRUN, *ENTRY, *overrides_arg(*overrides)], sagemaker_env(tmp_path, tiny_shards, stub=False))
    assert result.returncode == 0, result.output[-4000:]
    ranks = read_probes(tmp_path / "probe")
    assert [r["backend"] for r in ranks] == ["gloo", "gloo"]
    assert ranks[0]["end_digest"] == ranks[1]["end_digest"]
    warnings = [line for line in result.output.splitlines() if "UserWarning: SMDDP unavailable" in line]
    assert len(warnings) == 1 and "using the gloo backend" in warnings[0], warnings


def test_without_smddp_fallback_error_stops_with_one_clear_line(tiny_shards, tmp_path):
    overrides = [*TINY, "trainer=smddp", "trainer.strategy.fallback=error"]
    env = sagemaker_env(tmp_path, tiny_shards, stub=False, gpus=1)
    result = run([sys.executable, *ENTRY, *overrides_arg(*overrides)], env, timeout=120)
    assert result.returncode == 2, result.output[-4000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("skuvision: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "SMDDP is not available" in lines[0] and "smdistributed" in lines[0] and "fallback=auto" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "model").exists()


def test_entry_rejects_overrides_that_are_not_a_json_list(tmp_path, tiny_shards):
    env = sagemaker_env(tmp_path, tiny_shards, stub=False, gpus=1)
    result = run([sys.executable, *ENTRY, "--overrides", "model.freeze_depth=3"], env, timeout=60)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("skuvision: error: overrides='model.freeze_depth=3': not JSON")
    )


@pytest.mark.slow
def test_sigterm_mid_epoch_then_restart_resumes_from_the_checkpoint_and_completes(tiny_shards, tmp_path):
    train_images = json.loads((tiny_shards / "manifest.json").read_text())["splits"]["train"]["count"]
    steps_per_epoch = train_images // 2  # batch 2, drop_last
    # a real SIGTERM to the process in the middle of epoch 1, at a step the test chooses (helpers.fault_probe.SigtermAt),
    # not where a timer lands: a tiny epoch lasts well under a second. The restart runs the same command; the
    # probe does not fire again, as the resumed run starts past that step.
    sigterm_step = steps_per_epoch + steps_per_epoch // 2
    overrides = [
        *TINY,
        "data.batch_size=2",
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=1",
        "+callbacks.fault._target_=helpers.fault_probe.SigtermAt",
        f"+callbacks.fault.step={sigterm_step}",
    ]
    env = sagemaker_env(tmp_path, tiny_shards, stub=False, gpus=1)
    command = [sys.executable, *ENTRY, *overrides_arg(*overrides)]
    last = tmp_path / "checkpoints" / "last.ckpt"

    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = first.communicate(timeout=240)[0]
    assert first.returncode == 143, output[-3000:]
    state = torch.load(last, map_location="cpu", weights_only=False)
    progress = state["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert state["epoch"] == 1 and not progress["is_last_batch"] and progress["current"]["completed"] > 0, progress
    stopped_at = state["global_step"]
    assert stopped_at == sigterm_step
    assert not (tmp_path / "model").exists()  # an interrupted run exports nothing

    second = run(command, env)
    assert second.returncode == 0, second.output[-4000:]
    assert f"Restored all states from the checkpoint at {last}" in second.output
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["epochs"] == 3
    final = torch.load(last, map_location="cpu", weights_only=False)
    assert final["global_step"] == 3 * steps_per_epoch > stopped_at  # no step lost or repeated
    # the restart logged only the steps after the interruption, into a new CSV version
    import csv

    rows = list(csv.DictReader((tmp_path / "output" / "run" / "csv" / "version_1" / "metrics.csv").open()))
    steps = sorted({int(r["step"]) for r in rows if r.get("train/loss_step")})
    assert steps[0] == stopped_at and steps[-1] == 3 * steps_per_epoch - 1
