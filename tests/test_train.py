import csv
import json

import pytest
import torch

from skuvision.train import run

from helpers import FAST_TRAIN, TINY_MODEL, compose_train_cfg, run_cli


def test_small_end_to_end_train_writes_metrics_report_and_checkpoint(tiny_shards, tmp_path):
    # with the folded-BN speed path on, so load_classifier must rebuild exactly that structure
    cfg = compose_train_cfg(
        tmp_path, [f"data.root={tiny_shards}", *FAST_TRAIN, "model.fold_frozen_bn=true", "model.freeze_depth=2"]
    )
    value = run(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("val/top1", "test/top1", "test/top5", "params/total", "params/trainable", "global_batch", "lr/scaled"):
        assert key in metrics, key
    assert value == metrics["val/top1"]
    assert metrics["params/trainable"] < metrics["params/total"]  # freeze_depth=2
    assert metrics["global_batch"] == 16 and metrics["lr/scaled"] == pytest.approx(cfg.model.optimizer.lr * 16 / 256)
    rows = list(csv.DictReader((tmp_path / "per_sku.csv").open()))
    assert len(rows) == 6
    accs = [float(r["accuracy"]) for r in rows]
    assert accs == sorted(accs)  # worst SKUs first
    ckpt = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    assert len(ckpt["label_map"]["sku_to_index"]) == 6
    assert ckpt["hyper_parameters"]["num_classes"] == 6
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()

    # load_classifier rebuilds the trained model from the checkpoint alone: same label map, same answers
    from hydra.utils import instantiate

    from skuvision.model.module import load_classifier

    loaded = load_classifier(metrics["best_checkpoint"])
    assert loaded.label_map == ckpt["label_map"] and loaded.hparams.fold_frozen_bn
    reference = instantiate(cfg.model, num_classes=6, label_map=ckpt["label_map"], pretrained=False, _convert_="all")
    reference.load_state_dict(ckpt["state_dict"])
    images = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(images), reference.eval()(images))
        assert not torch.equal(loaded(images), instantiate(cfg.model, num_classes=6, pretrained=False).eval()(images))


def test_frozen_batchnorm_running_stats_never_move_through_fit(tiny_shards, tmp_path):
    import lightning as L
    from hydra.utils import instantiate

    cfg = compose_train_cfg(tmp_path, [f"data.root={tiny_shards}", *FAST_TRAIN, "model.freeze_depth=3"])
    dm = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, num_classes=dm.num_classes, label_map=dm.label_map.to_dict(), _convert_="all")
    frozen = {
        n: b.clone()
        for n, b in model.named_buffers()
        if "running" in n
        and any(
            n.startswith(f"backbone.model.{u}")
            for u in model.backbone.unit_names[: model.backbone.unit_stages.index(4)]
        )
    }
    live = {
        n: b.clone() for n, b in model.named_buffers() if n.startswith("backbone.model.layer4") and "running_mean" in n
    }
    assert frozen and live
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=2,
    )
    trainer.fit(model, datamodule=dm)
    buffers = dict(model.named_buffers())
    assert all(torch.equal(buffers[n], v) for n, v in frozen.items())
    assert any(not torch.equal(buffers[n], v) for n, v in live.items())  # the trainable part did learn stats
    assert not any(m.training for u in model.backbone.frozen_units for m in u.modules())


def test_resume_from_last_checkpoint(tiny_shards, tmp_path):
    cfg = compose_train_cfg(tmp_path, [f"data.root={tiny_shards}", *FAST_TRAIN, "trainer.max_epochs=1", "test=false"])
    run(cfg)
    cfg = compose_train_cfg(
        tmp_path, [f"data.root={tiny_shards}", *FAST_TRAIN, "trainer.max_epochs=2", "ckpt_path=last"]
    )
    run(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and "test/top1" in metrics


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.freeze_depth=9", "model.freeze_depth=9: must be 0..5"),
        ("model.backbone=resnet_nope", "model.backbone=resnet_nope: not a timm model"),
        ("data.root=null", "data.root is required"),
        ("data.root=/nonexistent/shards", "/nonexistent/shards/manifest.json: no shard manifest"),
        ("model.freeze_depth=deep", "model.freeze_depth"),
    ],
)
def test_bad_config_stops_with_one_clear_line(override, expected, tmp_path):
    args = [
        "train.py",
        f"hydra.run.dir={tmp_path}",
        "experiment=resnet152_fmcg",
        "model.pretrained=false",
        "data.root=/nonexistent/shards",
        override,
    ]
    result = run_cli(*args, env={"SM_CHANNEL_TRAIN": ""})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("skuvision: error:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_a_run_prints_no_repeated_library_noise_and_ends_with_where_its_outputs_went(tiny_shards, tmp_path):
    """What a user sees: the default callbacks and loggers, a partly frozen backbone, two epochs."""
    run_dir = tmp_path / "run"
    result = run_cli(
        "train.py",
        f"hydra.run.dir={run_dir}",
        f"data.root={tiny_shards}",
        "data.synthetic=null",
        *TINY_MODEL,
        "model.freeze_depth=2",  # frozen stages in eval mode: Lightning warns about that, on purpose here
        "data.batch_size=8",
        "data.num_workers=0",
        "trainer.max_epochs=2",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for noise in ("`weights_only` was not set", "in eval mode at the start of training", "💡 Tip:", "LeafSpec"):
        assert noise not in output, noise
    last = [line for line in result.stdout.splitlines() if line.strip()][-2:]  # the log (Hydra: stdout)
    assert last[0].endswith(f"metrics: {run_dir}/metrics.json") and f"outputs: {run_dir} (" in last[1], last


def test_litdata_small_cache_advice_is_dropped_once_quieted(tiny_shards, caplog):
    """The replay reader (10 GB) and the S3 partition merge (1 GB per reader) cap litdata's cache on purpose;
    litdata advises against it once per dataset opened, which was one console line per shard set per round."""
    import logging

    from litdata import StreamingDataset

    from skuvision.quiet import quiet_library_noise

    quiet_library_noise()
    with caplog.at_level(logging.WARNING, logger="litdata.streaming.dataset"):
        StreamingDataset(str(tiny_shards / "train"), max_cache_size="1GB")
        logging.getLogger("litdata.streaming.dataset").warning("another litdata warning")
    messages = [r.getMessage() for r in caplog.records]
    assert "another litdata warning" in messages  # real warnings still show
    assert not any("max_cache_size" in m for m in messages), messages
