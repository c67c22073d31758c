"""W&B logging through real Hydra multiruns and real offline wandb runs, read back from their files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from helpers import FAST_TRAIN, compose_train_cfg, run_cli

SECRET = "dummy-secret-123"
TINY = [
    "model.backbone=resnet10t",
    "model.pretrained=false",
    "model.head.hidden_dims=[32]",
    "data.image_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
]


# -- reading an offline run: the .wandb file is a LevelDB-style log of protobuf Records ------------------
def wandb_records(path: Path):
    """wandb >= 0.2x has no Python reader for its transaction log; the format is LevelDB's log format
    (32 KiB blocks, 7-byte chunk headers) after a 7-byte ':W&B' header."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, pending = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + length > len(data):
            return  # wandb-core is still writing this chunk: the caller reads again
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = pb.Record()
            record.ParseFromString(pending + chunk)
            pending = b""
            yield record
        elif kind in (2, 3):  # FIRST, MIDDLE
            pending += chunk


def complete_records(log_file: Path, timeout: float = 60.0) -> list:
    """The run's records once its ``exit`` record is on disk: wandb-core writes the file a little after
    ``wandb.finish()`` returns, so a read right after a run can see half of it."""
    import time

    deadline = time.monotonic() + timeout
    from google.protobuf.message import DecodeError

    while True:
        try:
            records = list(wandb_records(log_file))
        except DecodeError:  # a record caught mid-write: read again
            if time.monotonic() > deadline:
                raise
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def read_offline_run(run_dir: Path) -> dict:
    """{id, group, name, config, summary, artifacts} of one ``offline-run-*`` dir."""
    (log_file,) = run_dir.glob("run-*.wandb")
    run: dict = {"config": {}, "summary": {}, "artifacts": {}}
    records = complete_records(log_file)
    assert records[-1].WhichOneof("record_type") == "exit", f"{log_file}: no exit record (run not finished)"
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(
                id=record.run.run_id,
                group=record.run.run_group,
                name=record.run.display_name,
                tags=list(record.run.tags),
            )
        elif kind == "config":
            run["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            run["summary"].update({i.key: json.loads(i.value_json) for i in record.summary.update if i.key})
        elif kind == "artifact":
            a = record.artifact
            run["artifacts"][a.type if a.type == "model" else a.name] = [c.path for c in a.manifest.contents]
    return run


def offline_runs(root: Path) -> list[dict]:
    return [read_offline_run(d) for d in sorted(root.glob("**/wandb/offline-run-*"))]


def files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


# -- one real sweep, shared by the tests below and tests/test_compare.py ---------------------------------------
@pytest.fixture(scope="session")
def depth_sweep(tiny_shards, tmp_path_factory):
    """`train.py -m sweep=freeze_depth model.freeze_depth=0,2,4` with a W&B key in the environment."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "2026-01-01_00-00-00"
    result = run_cli(
        "train.py",
        "-m",
        "experiment=quickstart",
        "sweep=freeze_depth",
        "model.freeze_depth=0,2,4",
        f"data.root={tiny_shards}",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
        env={"WANDB_MODE": "offline", "WANDB_API_KEY": SECRET},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir, result


def test_sweep_makes_one_offline_run_per_job_in_one_group(depth_sweep):
    sweep_dir, _ = depth_sweep
    runs = offline_runs(sweep_dir)
    assert len(runs) == 3  # the command line's 0,2,4 replaced the preset's 2,3,4,5
    assert len({r["id"] for r in runs}) == 3
    assert {r["group"] for r in runs} == {f"train-{sweep_dir.name}"}
    by_name = {r["name"]: r for r in runs}
    assert set(by_name) == {"freeze_depth=0", "freeze_depth=2", "freeze_depth=4"}
    for depth in (0, 2, 4):
        run = by_name[f"freeze_depth={depth}"]
        assert run["config"]["model"]["freeze_depth"] == depth  # the resolved config, nested
        assert f"model.freeze_depth={depth}" in run["config"]["overrides"]
        assert run["config"]["data"]["image_size"] == 32 and run["tags"] == ["quickstart", "synthetic"]
        assert run["summary"]["freeze_depth"] == depth
        assert run["summary"]["params/trainable"] > 0 and run["summary"]["train/images_per_sec"] > 0
        assert 0.0 <= run["summary"]["test/top1"] <= 1.0
        assert any("worst_skus" in name for name in run["artifacts"])
        assert any("params" in name and "stages" in name for name in run["artifacts"])
    trainable = [by_name[f"freeze_depth={d}"]["summary"]["params/trainable"] for d in (0, 2, 4)]
    assert trainable[0] > trainable[1] > trainable[2]


def test_worst_skus_table_is_sorted_worst_first(depth_sweep):
    sweep_dir, _ = depth_sweep
    (table_file,) = (sweep_dir / "0").glob("wandb/offline-run-*/files/media/table/test/worst_skus*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"][:2] == ["sku_id", "class_index"]
    accuracy = [row[table["columns"].index("accuracy")] for row in table["data"]]
    assert len(accuracy) == 6 and accuracy == sorted(accuracy)  # all 6 tiny SKUs (fewer than 50)


def test_api_key_is_written_nowhere(depth_sweep):
    sweep_dir, result = depth_sweep
    assert list(sweep_dir.rglob("debug-internal.log")) and list(sweep_dir.rglob(".hydra/config.yaml"))
    assert files_containing(sweep_dir, SECRET) == []
    assert SECRET not in result.stdout + result.stderr


def test_compare_on_the_sweep_prints_three_rows_and_writes_a_png(depth_sweep):
    import csv

    from PIL import Image

    sweep_dir, _ = depth_sweep
    result = run_cli("-m", "skuvision.cli", "compare", str(sweep_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    table_rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(table_rows) == 3
    trainable = [int(line.split("│")[6].strip().replace(",", "")) for line in table_rows]
    assert trainable[0] > trainable[1] > trainable[2]  # rows sorted by depth 0, 2, 4
    rows = list(csv.DictReader((sweep_dir / "compare.csv").open()))
    assert [r["model.freeze_depth"] for r in rows] == ["0", "2", "4"]
    assert [int(r["trainable params"]) for r in rows] == trainable
    assert all(float(r["s/epoch"]) > 0 and 0 <= float(r["test/top1"]) <= 1 for r in rows)
    with Image.open(sweep_dir / "compare.png") as png:
        png.verify()
    with Image.open(sweep_dir / "compare.png") as png:
        assert png.format == "PNG" and png.size[0] > 600 and png.size[1] > 300
    assert (sweep_dir / "compare.md").read_text().count("\n| ") == 4  # header + 3 rows


def test_log_model_uploads_best_checkpoint_and_label_map(tiny_shards, tmp_path):
    from skuvision.train import run

    cfg = compose_train_cfg(
        tmp_path, [f"data.root={tiny_shards}", *FAST_TRAIN, "trainer.max_epochs=1", "logger.wandb.log_model=true"]
    )
    run(cfg)
    (wandb_run,) = offline_runs(tmp_path)
    assert sorted(wandb_run["artifacts"]["model"]) == ["label_map.json", "model.ckpt"]
    label_map = json.loads((tmp_path / "label_map.json").read_text())
    assert len(label_map["sku_to_index"]) == 6
    assert wandb_run["group"] == f"train-{tmp_path.name}"  # a plain run gets its own group


def test_online_without_a_key_stops_with_one_line(tiny_shards, tmp_path):
    result = run_cli(
        "train.py",
        f"hydra.run.dir={tmp_path}",
        f"data.root={tiny_shards}",
        *TINY,
        env={"WANDB_MODE": "online", "WANDB_API_KEY": "", "HOME": str(tmp_path)},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("skuvision: error:")]
    assert len(lines) == 1 and "WANDB_API_KEY" in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "env, explicit, expected",
    [
        ({}, None, "offline"),
        ({"WANDB_API_KEY": SECRET}, None, "online"),
        ({"WANDB_API_KEY": SECRET, "WANDB_MODE": "offline"}, None, "offline"),
        ({"WANDB_MODE": "dryrun"}, None, "offline"),
        ({"WANDB_API_KEY": SECRET}, "disabled", "disabled"),
    ],
)
def test_mode_is_offline_unless_a_key_or_online_is_asked_for(monkeypatch, tmp_path, env, explicit, expected):
    from skuvision.loggers.wandb import resolve_mode

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    for key in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert resolve_mode(explicit) == expected


def test_config_sent_to_wandb_drops_secrets(monkeypatch):
    from omegaconf import OmegaConf

    from skuvision.loggers.wandb import plain_config

    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    cfg = OmegaConf.create(
        {
            "model": {"freeze_depth": 3},
            "aws": {"secret_access_key": "x", "region": "eu"},
            "note": f"key={SECRET}",
            "lr": "${model.freeze_depth}",
        }
    )
    plain = plain_config(cfg)
    assert plain["model"] == {"freeze_depth": 3} and plain["lr"] == 3  # resolved
    assert plain["aws"] == {"region": "eu"} and SECRET not in json.dumps(plain)
