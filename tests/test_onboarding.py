"""Monthly onboarding: delta shards with a base, bounded replay, grown head, both strategies end to end."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from skuvision.data.labels import LabelMap
from skuvision.errors import DataError

from helpers import ROOT, TINY_MODEL, compose_train_cfg, run_cli

OLD_SKUS = 6  # of the 8 in the catalogue; the last 2 arrive "next month"


def _listing(catalogue: Path, skus: list[str], out: Path) -> Path:
    rows = [r for r in csv.DictReader((catalogue / "catalogue.csv").open()) if r["sku_id"] in skus]
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "sku_id", "brand", "category"])
        w.writeheader()
        w.writerows({**r, "path": str(catalogue / r["path"])} for r in rows)
    return out


def _checkpoint(base: Path, out: Path, seed: int = 0, image_size: int | None = 48) -> Path:
    """A train.py-format checkpoint for the base's label map (random weights: enough for plumbing tests),
    recording its preprocessing at ``image_size`` as training runs do (None: an older checkpoint)."""
    from skuvision.data.preprocess import preprocess_spec
    from skuvision.model.module import SKUClassifier

    torch.manual_seed(seed)
    label_map = json.loads((base / "manifest.json").read_text())["label_map"]
    model = SKUClassifier(
        len(label_map["sku_to_index"]),
        backbone="resnet10t",
        freeze_depth=0,
        head={"hidden_dims": [32], "dropout": 0.1},
        label_map=label_map,
    )
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "label_map": label_map}
    if image_size:
        ckpt["preprocess"] = preprocess_spec("resnet10t", image_size)
    torch.save(ckpt, out)
    return out


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    from skuvision.data.shards import BuildSettings, build_shards
    from skuvision.data.synthetic import make_catalogue, write_catalogue

    root = tmp_path_factory.mktemp("onboard")
    write_catalogue(root / "images", 8, 12, size=64, seed=5, progress=False)
    skus = [s.sku_id for s in make_catalogue(8, seed=5)]
    settings = BuildSettings(size=48, val=0.2, test=0.2)
    build_shards(_listing(root / "images", skus[:OLD_SKUS], root / "old.csv"), root / "base", settings, progress=False)
    build_shards(
        _listing(root / "images", skus[OLD_SKUS:], root / "new.csv"),
        root / "delta",
        settings,
        label_map_path=str(root / "base" / "manifest.json"),
        progress=False,
    )
    return {
        "root": root,
        "base": root / "base",
        "delta": root / "delta",
        "new": skus[OLD_SKUS:],
        "ckpt": _checkpoint(root / "base", root / "base.ckpt"),
    }


def test_delta_manifest_names_its_base_by_path_and_hash(month):
    from skuvision.data.lineage import shard_chain
    from skuvision.data.manifest import manifest_hash

    delta = json.loads((month["delta"] / "manifest.json").read_text())
    base = json.loads((month["base"] / "manifest.json").read_text())
    assert delta["base"] == {"path": str(month["base"].resolve()), "sha256": manifest_hash(base)}
    assert set(delta["per_sku"]) == set(month["new"])  # only the new images are sharded
    chain = shard_chain(str(month["delta"]), delta)
    assert [r for r, _ in chain] == [str(month["base"].resolve())]
    changed = dict(delta, base={**delta["base"], "sha256": "0" * 64})
    with pytest.raises(DataError, match="has changed since"):
        shard_chain(str(month["delta"]), changed)


def test_replay_is_bounded_deterministic_and_reads_the_right_labels(month):
    from skuvision.data.lineage import shard_chain
    from skuvision.onboarding.replay import old_sku_picks, read_picks

    delta = json.loads((month["delta"] / "manifest.json").read_text())
    chain = shard_chain(str(month["delta"]), delta)
    base = chain[0][1]
    old = LabelMap.from_dict(base["label_map"]).sku_to_index
    picks = old_sku_picks(chain, old, "train", 3)
    assert picks == old_sku_picks(chain, old, "train", 3)
    per_label = {label: sum(p.label == label for p in picks) for label in old.values()}
    assert per_label == {old[s]: min(3, c.get("train", 0)) for s, c in base["per_sku"].items()}
    assert len(picks) < base["splits"]["train"]["count"]  # never the whole base
    assert len({(p.split_dir, p.position) for p in picks}) == len(picks)
    labels = [label for _, label in read_picks(picks)]  # raises if a position holds another SKU
    assert labels == [p.label for p in picks]
    every = old_sku_picks(chain, old, "train", None)
    assert len(every) == base["splits"]["train"]["count"]


def test_growing_keeps_every_old_row_bit_identical(month):
    from skuvision.onboarding.grow import grown_model, load_checkpoint

    ckpt = load_checkpoint(str(month["ckpt"]))
    new_map = LabelMap.from_dict(json.loads((month["delta"] / "manifest.json").read_text())["label_map"])
    model, old_count = grown_model(ckpt, new_map)
    assert old_count == OLD_SKUS and model.head[-1].out_features == OLD_SKUS + 2
    state = ckpt["state_dict"]
    assert torch.equal(model.head[-1].weight[:OLD_SKUS], state["head.3.weight"])
    assert torch.equal(model.head[-1].bias[:OLD_SKUS], state["head.3.bias"])
    assert torch.equal(model.head[0].weight, state["head.0.weight"])
    x = torch.rand(2, 3, 48, 48)
    from skuvision.model.module import load_classifier

    old_model = load_classifier(str(month["ckpt"])).eval()
    with torch.no_grad():
        assert torch.equal(model(x)[:, :OLD_SKUS], old_model(x))


def test_ridge_statistics_added_month_by_month_equal_the_joint_solution():
    from skuvision.model.ridge import RidgeStats

    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(90, 16, generator=g), torch.arange(90) % 9
    stats = RidgeStats(16)
    for month, classes in enumerate((range(0, 5), range(5, 7), range(7, 9))):
        mask = torch.isin(labels, torch.tensor(list(classes)))
        stats.add(feats[mask], labels[mask], max(classes) + 1)
        if month == 0:
            state = stats.state()
            stats = RidgeStats.from_state({k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()})
    joint = RidgeStats(16)
    joint.add(feats, labels, 9)
    w, b = stats.solve(0.5)
    wj, bj = joint.solve(0.5)
    assert w.shape == (9, 16)
    assert torch.allclose(w, wj, atol=1e-6) and torch.allclose(b, bj, atol=1e-6)
    assert stats.count == joint.count == 90


def _onboard_cfg(month, tmp_path, *extra):
    """The config `python onboard.py <overrides>` would run, with outputs under tmp_path."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from skuvision.config.compose import compose

    overrides = [
        f"onboard.from={month['ckpt']}",
        f"data.root={month['delta']}",
        "data.batch_size=16",
        "onboard.replay_per_sku=3",
        *extra,
    ]
    cfg = compose(overrides, return_hydra_config=True, config_name="onboard")
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path / "logs")
        del cfg.hydra
    return cfg


@pytest.mark.parametrize("strategy", ["closed_form", "finetune", "ridge"])
def test_onboarding_run_writes_a_normal_run_dir(month, tmp_path, strategy):
    from skuvision.model.module import load_classifier
    from skuvision.onboarding.task import run

    extra = {
        "ridge": ["onboard.strategy=closed_form", "onboard.solver=ridge"],
        "closed_form": ["onboard.strategy=closed_form", "onboard.solver=mean"],
        "finetune": ["onboard.strategy=finetune", "onboard.augmented_copies=2", "onboard.epochs=3"],
    }[strategy]
    value = run(_onboard_cfg(month, tmp_path, *extra))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "test/top1",
        "test/top1_old",
        "test/top1_new",
        "onboard/seconds",
        "onboard/backbone_images",
        "val/top1",
    ):
        assert metrics[key] is not None, key
    assert value == metrics["test/top1"]
    base = json.loads((month["base"] / "manifest.json").read_text())
    delta = json.loads((month["delta"] / "manifest.json").read_text())
    replay = sum(min(3, c.get("train", 0)) for c in base["per_sku"].values())
    copies = 2 if strategy == "finetune" else 1
    assert metrics["onboard/replay_images"] == replay
    assert metrics["onboard/backbone_images"] == copies * (replay + delta["splits"]["train"]["count"])
    assert metrics["test/images"] == base["splits"]["test"]["count"] + delta["splits"]["test"]["count"]
    rows = list(csv.DictReader((tmp_path / "per_sku.csv").open()))
    assert {r["sku_id"] for r in rows if r["new"] == "1"} == set(month["new"])
    assert len(rows) == 8
    model = load_classifier(str(tmp_path / "checkpoints" / "last.ckpt"))
    assert model.hparams.num_classes == 8 and len(model.label_map["sku_to_index"]) == 8
    old = torch.load(month["ckpt"], weights_only=True)["state_dict"]["head.3.weight"]
    assert torch.equal(model.head[-1].weight[:OLD_SKUS], old) == (strategy != "ridge")


def test_ridge_second_month_adds_only_the_new_images(month, tmp_path):
    """Statistics kept in the checkpoint: month 2 pushes only its own images through the backbone."""
    from skuvision.data.shards import BuildSettings, build_shards
    from skuvision.data.synthetic import make_catalogue, write_catalogue
    from skuvision.onboarding.task import run

    ridge = ["onboard.strategy=closed_form", "onboard.solver=ridge"]
    run(_onboard_cfg(month, tmp_path / "m1", *ridge))
    write_catalogue(tmp_path / "images", 9, 12, size=64, seed=5, progress=False)
    ninth = make_catalogue(9, seed=5)[-1].sku_id
    build_shards(
        _listing(tmp_path / "images", [ninth], tmp_path / "m2.csv"),
        tmp_path / "delta2",
        BuildSettings(size=48, val=0.2, test=0.2),
        label_map_path=str(month["delta"] / "manifest.json"),
        progress=False,
    )
    cfg = _onboard_cfg(
        month,
        tmp_path / "m2",
        *ridge,
        f"onboard.from={tmp_path / 'm1/checkpoints/last.ckpt'}",
        f"data.root={tmp_path / 'delta2'}",
    )
    run(cfg)
    metrics = json.loads((tmp_path / "m2" / "metrics.json").read_text())
    delta2 = json.loads((tmp_path / "delta2" / "manifest.json").read_text())
    assert metrics["onboard/backbone_images"] == delta2["splits"]["train"]["count"]
    assert metrics["onboard/rounds"] == 2 and metrics["num_classes"] == 9
    assert metrics["test/images"] > delta2["splits"]["test"]["count"]  # months 0 and 1 still tested
    first = torch.load(tmp_path / "m1/checkpoints/last.ckpt", weights_only=True)["onboarding"]["ridge"]
    second = torch.load(tmp_path / "m2/checkpoints/last.ckpt", weights_only=True)["onboarding"]["ridge"]
    assert second["count"] == first["count"] + delta2["splits"]["train"]["count"]  # sums carried forward

    # onboard.test=false (chained rounds evaluated elsewhere): the same checkpoint, no val/test pass
    month2 = [f"onboard.from={tmp_path / 'm1/checkpoints/last.ckpt'}", f"data.root={tmp_path / 'delta2'}"]
    run(_onboard_cfg(month, tmp_path / "m2q", *ridge, *month2, "onboard.test=false"))
    quiet = json.loads((tmp_path / "m2q" / "metrics.json").read_text())
    assert quiet["test/images"] == 0 and quiet["test/top1"] is None and quiet["onboard/eval_backbone_images"] == 0
    assert not (tmp_path / "m2q" / "per_sku.csv").exists()
    a = torch.load(tmp_path / "m2/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "m2q/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_not_trained_on_the_delta_base_stops_with_one_line(month, tmp_path):
    label_map = json.loads((month["base"] / "manifest.json").read_text())["label_map"]
    swapped = dict(label_map["sku_to_index"])
    a, b = list(swapped)[:2]
    swapped[a], swapped[b] = swapped[b], swapped[a]
    ckpt = torch.load(month["ckpt"], weights_only=True)
    ckpt["label_map"] = {**label_map, "sku_to_index": swapped}
    bad = tmp_path / "other.ckpt"
    torch.save(ckpt, bad)
    result = run_cli(
        "onboard.py",
        f"onboard.from={bad}",
        f"data.root={month['delta']}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("skuvision: error: label map mismatch: SKU"), lines[-3:]
    assert str(bad) in lines[-1] and f"{month['delta']}/manifest.json" in lines[-1]
    assert "Traceback" not in result.stderr


def test_base_that_is_not_the_checkpoints_names_both_files(month):
    from skuvision.data.lineage import check_label_maps

    ckpt_map = LabelMap.from_dict({"a": 0, "b": 1})
    delta_map = LabelMap.from_dict({"a": 0, "b": 1, "c": 2, "d": 3})
    base_map = LabelMap.from_dict({"a": 0, "b": 1, "c": 2})
    with pytest.raises(DataError, match=r"base mismatch: m\.ckpt .* base B/manifest\.json .* D/manifest\.json extends"):
        check_label_maps("m.ckpt", ckpt_map, "D/manifest.json", delta_map, "B/manifest.json", base_map)
    assert check_label_maps("m.ckpt", ckpt_map, "D", delta_map, "B", LabelMap.from_dict({"a": 0, "b": 1})) == ["c", "d"]


def test_checkpoint_from_s3_is_fetched_once_into_the_run_dir(aws, month, tmp_path):
    from skuvision.onboarding.task import run

    s3 = aws.client("s3")
    s3.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    s3.upload_file(str(month["ckpt"]), "models", "2026-11/last.ckpt")
    cfg = _onboard_cfg(month, tmp_path, "onboard.from=s3://models/2026-11/last.ckpt")
    run(cfg)
    fetched = tmp_path / "onboard_from" / "last.ckpt"
    assert fetched.read_bytes() == month["ckpt"].read_bytes()
    s3.delete_object(Bucket="models", Key="2026-11/last.ckpt")  # a rerun (spot restart) in the same dir needs no S3
    run(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text())["onboard/from"] == "s3://models/2026-11/last.ckpt"
    with pytest.raises(DataError, match=r"onboard.from=s3://models/2026-12/last.ckpt: no such object"):
        run(_onboard_cfg(month, tmp_path / "other", "onboard.from=s3://models/2026-12/last.ckpt"))


def test_strategies_sweep_with_hydra_multirun(month, tmp_path):
    """onboard.py is an ordinary Hydra task: `-m` runs one job per strategy."""
    result = run_cli(
        "onboard.py",
        "-m",
        f"onboard.from={month['ckpt']}",
        f"data.root={month['delta']}",
        "onboard.augmented_copies=1",
        "onboard.epochs=2",
        "onboard.strategy=closed_form,finetune",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    strategies = sorted(
        json.loads(p.read_text())["onboard/strategy"] for p in (tmp_path / "sweep").glob("*/metrics.json")
    )
    assert strategies == ["closed_form", "finetune"]


def test_image_size_and_preprocessing_come_from_the_checkpoint(month, tmp_path, caplog):
    """A model trained at 48 px is onboarded at 48 px, with no override (conf/onboard.yaml's fallback is 128)."""
    from skuvision.onboarding.task import run

    cfg = _onboard_cfg(month, tmp_path / "recorded")
    assert cfg.onboard.fallback_image_size != 48
    run(cfg)
    out = torch.load(tmp_path / "recorded" / "checkpoints" / "last.ckpt", weights_only=True)
    assert out["preprocess"] == torch.load(month["ckpt"], weights_only=True)["preprocess"]
    assert out["preprocess"]["crop"] == 48 and out["onboarding"]["image_size"] == 48

    old = _checkpoint(month["base"], tmp_path / "old.ckpt", image_size=None)
    with caplog.at_level("INFO", logger="skuvision.onboarding.task"):
        run(_onboard_cfg(month, tmp_path / "older", f"onboard.from={old}", "onboard.fallback_image_size=64"))
    assert sum("records no preprocessing" in r.getMessage() for r in caplog.records) == 1
    out = torch.load(tmp_path / "older" / "checkpoints" / "last.ckpt", weights_only=True)
    assert out["preprocess"]["crop"] == 64 and out["onboarding"]["image_size"] == 64


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("onboard.strategy=lbfgs", "onboard.strategy=lbfgs: use closed_form or finetune"),
        ("onboard.solver=lasso", "onboard.solver=lasso: use mean or ridge"),
        ("onboard.augmented_copies=0", "onboard.augmented_copies=0: must be >= 1"),
        ("onboard.ridge=-1", "onboard.ridge=-1.0: must be positive"),
        ("+onboard.views=4", "onboard.views: unknown key"),
        ("onboard.epochs=many", "onboard.epochs"),
    ],
)
def test_bad_onboard_setting_is_one_line_naming_the_key(month, tmp_path, override, message):
    from skuvision.errors import ConfigError
    from skuvision.onboarding.settings import read_settings

    with pytest.raises(ConfigError, match=re.escape(message)):
        read_settings(_onboard_cfg(month, tmp_path, override))


@pytest.mark.slow  # 10-25 s: the fast suite stays under ~10 min on 2 cores
def test_onboard_cli_without_a_checkpoint_and_train_experiment_onboard_stop_with_one_line(month, tmp_path):
    result = run_cli("onboard.py", f"data.root={month['delta']}", f"hydra.run.dir={tmp_path / 'a'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("skuvision: error: onboard.from is required")
    moved = run_cli("train.py", "experiment=onboard", f"data.root={month['delta']}", f"hydra.run.dir={tmp_path / 'b'}")
    assert moved.returncode == 2, moved.stderr[-2000:]
    last = moved.stderr.strip().splitlines()[-1]
    assert last.startswith("skuvision: error: onboarding is its own task now: python onboard.py"), last
    assert "Traceback" not in result.stderr + moved.stderr


@pytest.mark.slow  # ~40 s: the container entry in a subprocess, with its ONNX export
def test_container_entry_runs_an_onboarding_job_and_exports_its_model(month, tmp_path):
    """What a SageMaker job of `python onboard.py -m hydra/launcher=sagemaker ...` runs on its one rank."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env.update(
        {
            "SM_MODEL_DIR": str(tmp_path / "model"),
            "SM_OUTPUT_DATA_DIR": str(tmp_path / "output"),
            "SM_CHANNEL_TRAIN": str(month["delta"]),  # the job sets no data.root: the channel is the delta
            "SKUVISION_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]),
        }
    )
    overrides = [f"onboard.from={month['ckpt']}", "onboard.replay_per_sku=3", "onboard.solver=mean"]
    result = subprocess.run(
        [sys.executable, "-m", "skuvision.entry.sagemaker_job", "--overrides", json.dumps(overrides)]
        + ["--config_name", "onboard"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["onboard/solver"] == "mean" and metrics["num_classes"] == 8
    assert metrics["best_checkpoint"] == "model.ckpt"
    ckpt = torch.load(tmp_path / "model" / "model.ckpt", weights_only=True)
    assert len(ckpt["label_map"]["sku_to_index"]) == 8 and ckpt["preprocess"]["crop"] == 48
    assert (tmp_path / "output" / "run" / "per_sku.csv").is_file()


def _with_base_sums(month, out: Path, **projection) -> Path:
    """The fixture's checkpoint plus the ridge sums a training run leaves: its train split through the
    trunk with the datamodule's ordered eval loader, as the RidgeStatistics callback reads it."""
    from skuvision.config.data_module import shard_data_module
    from skuvision.model.module import load_classifier
    from skuvision.model.ridge import RandomProjection, split_model, split_statistics

    model = load_classifier(str(month["ckpt"]))
    trunk, last = split_model(model)
    dm = shard_data_module(str(month["base"]), image_size=48, batch_size=8, num_workers=0, backbone="resnet10t")
    batches = ((b["image"], b["label"]) for b in dm.ordered_eval_dataloader("train"))
    proj = RandomProjection(last.in_features, **projection) if projection else None
    stats = split_statistics(trunk, batches, dm.num_classes, "cpu", proj)
    ckpt = torch.load(month["ckpt"], weights_only=True)
    assert stats.count == json.loads((month["base"] / "manifest.json").read_text())["splits"]["train"]["count"]
    ckpt["onboarding"] = {"ridge": stats.state()}
    torch.save(ckpt, out)
    return out


def _joint_solution(model, month, penalty: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ridge layer solved at once on every training image of the base and the delta."""
    from skuvision.data.transforms import eval_transform
    from skuvision.model.ridge import RidgeStats, split_model
    from skuvision.onboarding.features import FeatureCache
    from skuvision.onboarding.replay import read_picks, split_picks

    trunk, last = split_model(model)
    picks = []
    for root in (month["base"], month["delta"]):
        picks += split_picks(str(root), json.loads((root / "manifest.json").read_text()), "train")
    feats, labels = FeatureCache(trunk, batch_size=5).extract(read_picks(picks), eval_transform(model.preprocess))
    joint = RidgeStats(feats.shape[1])
    joint.add(feats, labels, last.out_features)
    return joint.solve(penalty)


@pytest.mark.parametrize("projection", [{}, {"dim": 96, "seed": 3, "nonlinearity": "relu"}])
def test_base_sums_make_onboarding_equal_the_joint_ridge_solution(month, tmp_path, projection):
    """With the base run's sums in the checkpoint, onboarding reads only the delta's train images and its
    SKU layer is the ridge solution over base + delta train images at once (RanPAC's property)."""
    from skuvision.model.module import load_classifier
    from skuvision.onboarding.task import run

    ckpt = _with_base_sums(month, tmp_path / "with_sums.ckpt", **projection)
    extra = [f"onboard.projection={projection['dim']}", "onboard.projection_seed=3"] if projection else []
    run(_onboard_cfg(month, tmp_path / "run", f"onboard.from={ckpt}", "onboard.ridge=0.5", *extra))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    delta = json.loads((month["delta"] / "manifest.json").read_text())
    assert metrics["onboard/backbone_images"] == delta["splits"]["train"]["count"]  # nothing old re-read
    assert metrics["onboard/replay_images"] == 0 and metrics["onboard/ridge_from_base"] is True
    base_train = json.loads((month["base"] / "manifest.json").read_text())["splits"]["train"]["count"]
    assert metrics["onboard/ridge_images"] == base_train + delta["splits"]["train"]["count"]
    model = load_classifier(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    weight, bias = _joint_solution(model, month, 0.5)
    assert torch.allclose(model.head[-1].weight, weight, atol=1e-4, rtol=1e-3)
    assert torch.allclose(model.head[-1].bias, bias, atol=1e-4, rtol=1e-3)


def test_ridge_penalty_chosen_on_held_out_images(month, tmp_path):
    from skuvision.onboarding.task import run

    run(_onboard_cfg(month, tmp_path, "onboard.ridge=null", "onboard.ridge_grid=[0.01,1.0,100.0]"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    scores = {float(k): v for k, v in metrics["onboard/ridge_val_top1"].items()}
    assert set(scores) == {0.01, 1.0, 100.0}
    assert metrics["onboard/ridge_penalty"] in scores
    assert scores[metrics["onboard/ridge_penalty"]] == max(scores.values())


def test_projected_model_exports_to_onnx_and_predicts_as_the_checkpoint(month, tmp_path):
    """The RanPAC projection is part of the model: checkpoint, ONNX graph and predict agree."""
    import numpy as np
    import onnx

    from skuvision.export.bundle import export_checkpoint
    from skuvision.export.predict import collect_inputs, predict_paths
    from skuvision.export.runtime import load_predictor

    extra = ["onboard.projection=96", "onboard.projection_seed=3", "onboard.ridge=0.5"]
    from skuvision.onboarding.task import run as onboard

    onboard(_onboard_cfg(month, tmp_path / "run", *extra))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["head"]["projection"] == {
        "dim": 96,
        "seed": 3,
        "nonlinearity": "relu",
    }
    summary = export_checkpoint(ckpt, tmp_path / "export")
    assert summary["parity_max_abs_diff"] < 1e-4 and summary["parity_top1_identical"]
    graph = onnx.load(str(tmp_path / "export" / "model.onnx")).graph
    assert any(list(t.dims) in ([32, 96], [96, 32]) for t in graph.initializer)  # the projection travels
    paths = collect_inputs([str(month["root"] / "images")])[:12]
    by_ckpt = predict_paths(load_predictor(ckpt), paths, topk=3, progress=False)
    by_export = predict_paths(load_predictor(tmp_path / "export"), paths, topk=3, progress=False)
    assert len(by_ckpt) == 12
    for a, b in zip(by_ckpt, by_export):
        assert [p["sku_id"] for p in a["predictions"]] == [p["sku_id"] for p in b["predictions"]]
        assert np.allclose(
            [p["probability"] for p in a["predictions"]], [p["probability"] for p in b["predictions"]], atol=1e-5
        )


@pytest.mark.slow  # ~40 s: a real (tiny) training run
def test_training_run_leaves_the_train_splits_ridge_sums_in_its_tested_checkpoint(month, tmp_path):
    from skuvision.train import run as train

    cfg = compose_train_cfg(
        tmp_path,
        [
            f"data.root={month['base']}",
            *TINY_MODEL,
            "data.num_workers=0",
            "data.batch_size=8",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            "logger=csv",
            "~callbacks.progress_bar",
        ],
    )
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    base = json.loads((month["base"] / "manifest.json").read_text())
    assert metrics["ridge/images"] == base["splits"]["train"]["count"] and metrics["ridge/seconds"] > 0
    sums = torch.load(metrics["best_checkpoint"], weights_only=False)["onboarding"]["ridge"]
    assert sums["count"] == base["splits"]["train"]["count"]
    assert tuple(sums["cross"].shape) == (32 + 1, len(base["label_map"]["sku_to_index"]))
    per_class = torch.tensor([float(c.get("train", 0)) for c in base["per_sku"].values()], dtype=torch.float64)
    assert torch.equal(sums["cross"][-1], per_class)  # the bias row counts each SKU's train images


@pytest.mark.slow  # ~60 s: two CPU ranks
def test_ddp_training_run_sums_every_train_image_once_across_ranks(month, tmp_path):
    result = run_cli(
        "train.py",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.strategy.timeout.seconds=60",
        f"data.root={month['base']}",
        *TINY_MODEL,
        "data.batch_size=4",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "logger=csv",
        "~callbacks.progress_bar",
        f"hydra.run.dir={tmp_path}",
        timeout=480,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    base = json.loads((month["base"] / "manifest.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ridge/images"] == base["splits"]["train"]["count"]
    sums = torch.load(metrics["best_checkpoint"], weights_only=False)["onboarding"]["ridge"]
    per_class = torch.tensor([float(c.get("train", 0)) for c in base["per_sku"].values()], dtype=torch.float64)
    assert torch.equal(sums["cross"][-1], per_class)
