"""`skuvision compare` over run dirs written the way train.py writes them, and the offline study end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from helpers import run_cli


def fake_job(root: Path, name: str, overrides: list[str], metrics: dict | None) -> Path:
    """A job dir as Hydra + train.py leave it: .hydra/overrides.yaml and (unless it failed) metrics.json."""
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    return job


def metrics_for(depth: int) -> dict:
    return {
        "val/top1": 0.5 + depth / 20,
        "test/top1": 0.4 + depth / 20,
        "test/top5": 0.9,
        "params/trainable": 1_000_000 - depth * 100_000,
        "params/total": 1_000_000,
        "train/seconds": 60.0 - depth * 10,
        "epochs": 6,
        "train/images_per_sec": 100.0 + depth,
    }


def test_rows_sort_numerically_by_the_varying_key_and_failed_jobs_show(tmp_path):
    from skuvision.report.compare import build_table, varying_keys
    from skuvision.report.runs import load_local_runs

    for num, depth in enumerate([10, 2, 3]):  # 10 sorts after 3 numerically, before it as text
        fake_job(tmp_path, str(num), [f"model.freeze_depth={depth}", "data.root=/x"], metrics_for(depth))
    fake_job(tmp_path, "3", ["model.freeze_depth=4", "data.root=/x"], None)
    runs = load_local_runs([tmp_path])
    assert varying_keys(runs) == ["model.freeze_depth"]  # data.root is the same everywhere
    header, rows = build_table(runs)
    assert header[:2] == ["run", "model.freeze_depth"]
    assert [r["model.freeze_depth"] for r in rows] == ["2", "3", "4", "10"]
    assert rows[0]["s/epoch"] == pytest.approx(40.0 / 6)
    assert rows[2]["status"].startswith("no metrics.json") and rows[2]["test/top1"] is None


def test_cli_writes_table_files_and_png_into_out(tmp_path):
    from PIL import Image

    sweep = tmp_path / "sweep"
    for num, depth in enumerate([2, 3, 4, 5]):
        fake_job(sweep, str(num), [f"model.freeze_depth={depth}", "sweep=freeze_depth"], metrics_for(depth))
    result = run_cli("-m", "skuvision.cli", "compare", str(sweep), "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "varying model.freeze_depth" in result.stdout and "compare.png" in result.stdout
    rows = list(csv.DictReader((tmp_path / "report" / "compare.csv").open()))
    assert [int(r["trainable params"]) for r in rows] == [800_000, 700_000, 600_000, 500_000]
    md = (tmp_path / "report" / "compare.md").read_text()
    assert "| run | model.freeze_depth | val/top1 |" in md and "700,000" in md
    with Image.open(tmp_path / "report" / "compare.png") as png:
        assert png.format == "PNG" and png.size[0] > 600
    assert not (sweep / "compare.csv").exists()


def test_several_run_dirs_compare_by_their_differing_overrides(tmp_path):
    from skuvision.report.compare import build_table
    from skuvision.report.runs import load_local_runs

    a = fake_job(tmp_path, "a", ["experiment=finetune_synthetic", "model.freeze_depth=3"], metrics_for(3))
    b = fake_job(
        tmp_path, "b", ["experiment=finetune_synthetic", "model.freeze_depth=3", "data.image_size=96"], metrics_for(3)
    )
    header, rows = build_table(load_local_runs([a, b]))
    assert header[1:2] == ["data.image_size"] and [r["data.image_size"] for r in rows] == [
        "96",
        "",
    ]  # unset (the default) last


def test_seeds_of_one_setting_collapse_into_a_mean_and_std(tmp_path, capsys):
    """`-m seed=1,2,3 model.mix.cutmix_alpha=0,1`: one row per alpha over its seeds; a failed seed is counted, not averaged."""
    from skuvision.report.compare import compare, seed_table
    from skuvision.report.runs import load_local_runs

    val = {("0", "1"): 0.80, ("0", "2"): 0.84, ("0", "3"): 0.82, ("1", "1"): 0.83, ("1", "2"): 0.83}
    for num, ((alpha, seed), v) in enumerate(val.items()):
        metrics = {"val/top1": v, "test/top1": v - 0.01, "train/seconds": 10.0, "epochs": 1}
        fake_job(tmp_path, str(num), [f"seed={seed}", f"model.mix.cutmix_alpha={alpha}", "data.root=/x"], metrics)
    fake_job(tmp_path, "5", ["seed=3", "model.mix.cutmix_alpha=1", "data.root=/x"], None)  # still running
    header, rows = seed_table(load_local_runs([tmp_path]))
    assert header[:3] == ["model.mix.cutmix_alpha", "seeds", "runs"]
    assert [(r["model.mix.cutmix_alpha"], r["seeds"], r["runs"]) for r in rows] == [
        ("0", "1,2,3", "3/3"),
        ("1", "1,2", "2/3"),
    ]
    assert rows[0]["val/top1 mean"] == pytest.approx(0.82) and rows[0]["val/top1 std"] == pytest.approx(0.02)
    assert rows[1]["val/top1 std"] == pytest.approx(0.0) and rows[1]["test/top1 mean"] == pytest.approx(0.82)
    written = compare([str(tmp_path)], out=str(tmp_path / "report"), plot=False)
    md = written["seeds_md"].read_text()
    assert "| model.mix.cutmix_alpha | seeds | runs | val/top1 mean | val/top1 std |" in md and "0.8200 | 0.0200" in md
    assert "settings over seeds" in capsys.readouterr().out
    one_seed = tmp_path / "no_seeds"
    for num, depth in enumerate([2, 3]):
        fake_job(one_seed, str(num), [f"model.freeze_depth={depth}"], metrics_for(depth))
    assert seed_table(load_local_runs([one_seed])) is None
    assert "seeds_md" not in compare([str(one_seed)], plot=False)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["/nonexistent/sweep"], "/nonexistent/sweep: no such directory"),
        (["--wandb", "team/skuvision", "--group", "g"], "WANDB_MODE=offline"),
        (["--wandb", "team/skuvision"], "needs --group"),
        ([], "pass run/multirun DIRs"),
    ],
)
def test_compare_errors_are_one_line(tmp_path, args, expected):
    result = run_cli("-m", "skuvision.cli", "compare", *args, env={"WANDB_MODE": "offline"})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("skuvision: error:")]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr


def test_empty_dir_says_what_to_pass(tmp_path):
    result = run_cli("-m", "skuvision.cli", "compare", str(tmp_path))
    assert result.returncode == 2 and "no runs under it" in result.stderr


def test_wandb_without_a_key_says_how_to_log_in(tmp_path):
    env = {"WANDB_MODE": "", "WANDB_API_KEY": "", "HOME": str(tmp_path)}
    result = run_cli("-m", "skuvision.cli", "compare", "--wandb", "team/skuvision", "--group", "g", env=env)
    assert result.returncode == 2 and "WANDB_API_KEY" in result.stderr and "Traceback" not in result.stderr


def test_wandb_runs_become_rows_from_config_overrides_and_summary():
    """The W&B API cannot run offline; this is the shape of wandb.apis.public.Run that compare reads."""
    from types import SimpleNamespace

    from skuvision.report.compare import build_table
    from skuvision.report.runs import wandb_run_to_run

    api_runs = [
        SimpleNamespace(
            name=f"freeze_depth={d}",
            id=f"id{d}",
            state="finished",
            url="",
            config={"overrides": [f"model.freeze_depth={d}"], "model": {"freeze_depth": d}},
            summary={**metrics_for(d), "_runtime": 3},
        )
        for d in (4, 2)
    ]
    header, rows = build_table([wandb_run_to_run(r) for r in api_runs])
    assert [r["run"] for r in rows] == ["freeze_depth=2", "freeze_depth=4"]
    assert rows[0]["trainable params"] == 800_000 and rows[0]["status"] == "ok"


@pytest.mark.slow
def test_pretrain_then_finetune_freeze_sweep_offline(tmp_path):
    """experiment=pretrain_synthetic exports a backbone that the finetune_synthetic sweep starts from."""
    import torch
    from safetensors.torch import load_file

    tiny = [
        "model.backbone=resnet10t",
        "model.pretrained=false",
        "data.synthetic.skus=6",
        "data.synthetic.images_per_sku=10",
        "data.synthetic.size=48",
        "data.image_size=32",
        "data.batch_size=8",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar",
        f"paths.data_dir={tmp_path / 'data'}",
    ]
    env = {"WANDB_MODE": "offline"}
    pre = run_cli("train.py", "experiment=pretrain_synthetic", *tiny, f"hydra.run.dir={tmp_path / 'pre'}", env=env)
    assert pre.returncode == 0, pre.stderr[-3000:]
    exported = tmp_path / "data" / "pretrained" / "synthetic_resnet10t.safetensors"
    assert exported.is_file() and str(exported) in pre.stdout + pre.stderr  # the log says where it went

    sweep = tmp_path / "sweep"
    fine = run_cli(
        "train.py",
        "-m",
        "experiment=finetune_synthetic",
        "model.freeze_depth=0,3,5",
        *tiny,
        f"hydra.sweep.dir={sweep}",
        env=env,
    )
    assert fine.returncode == 0, fine.stderr[-3000:]

    manifests = [
        json.loads((tmp_path / "data" / f"synthetic_{k}" / "shards" / "manifest.json").read_text())
        for k in ("pretrain", "finetune")
    ]
    skus = [set(m["label_map"]["sku_to_index"]) for m in manifests]
    brands = [set(m["label_map"]["brands"].values()) for m in manifests]
    assert not skus[0] & skus[1] and not brands[0] & brands[1]  # disjoint catalogues

    weights = load_file(str(exported))
    frozen_all = json.loads((sweep / "2" / "metrics.json").read_text())  # freeze_depth=5
    state = torch.load(frozen_all["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(state[f"backbone.model.{k}"], v) for k, v in weights.items())  # loaded, never moved

    result = run_cli("-m", "skuvision.cli", "compare", str(sweep))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader((sweep / "compare.csv").open()))
    assert [r["model.freeze_depth"] for r in rows] == ["0", "3", "5"]
    trainable = [int(r["trainable params"]) for r in rows]
    assert trainable[0] > trainable[1] > trainable[2]
    assert all(0 <= float(r["test/top1"]) <= 1 and float(r["s/epoch"]) > 0 for r in rows)
    assert (sweep / "compare.png").stat().st_size > 10_000
