"""``callbacks.ema``: validation, the best checkpoint and the test all see the averaged weights."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from skuvision import train
from skuvision.errors import ConfigError

from helpers import FAST_TRAIN, compose_train_cfg

EMA = [
    "callbacks.ema={_target_:skuvision.callbacks.ema.WeightEMA,decay:0.9}",
    "callbacks.model_checkpoint.save_top_k=-1",
]


def _fitted(tiny_shards, tmp_path):
    cfg = compose_train_cfg(tmp_path, [f"data.root={tiny_shards}", *FAST_TRAIN, "logger=csv", *EMA])
    datamodule = train.build_datamodule(cfg)
    model = train.build_model(cfg, datamodule)
    trainer = train.build_trainer(cfg)
    train.fit(cfg, trainer, model, datamodule, tmp_path)
    return trainer, model, datamodule


def test_the_best_checkpoint_holds_the_average_and_is_what_validate_and_test_score(tiny_shards, tmp_path):
    trainer, model, datamodule = _fitted(tiny_shards, tmp_path)
    best = trainer.checkpoint_callback.best_model_path
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    trained = [k for k, v in model.named_parameters() if v.requires_grad]
    assert any(not torch.equal(averaged[k], raw[k]) for k in trained), "the average equals the raw weights"

    score = trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)[0]["val/top1"]
    assert score == pytest.approx(float(trainer.checkpoint_callback.best_model_score), abs=1e-6)
    seen = _WeightsValidationSees(trained[-1])
    trainer.callbacks.append(seen)  # after the EMA callback: sees the weights once any swap is done
    first = tmp_path / "checkpoints" / "epoch_000.ckpt"  # an earlier average than the end of training's
    trainer.validate(model, datamodule=datamodule, ckpt_path=str(first), verbose=False)
    expected = torch.load(first, map_location="cpu", weights_only=False)["state_dict"][trained[-1]]
    assert torch.equal(seen.weights, expected)  # that checkpoint's average, not the end of training's

    trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
    tested = model.state_dict()
    for key in trained:  # the tested weights are the average, not the raw weights beside it
        assert torch.equal(tested[key], averaged[key]), key


class _WeightsValidationSees(L.Callback):
    def __init__(self, key: str):
        self.key, self.weights = key, None

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.weights = pl_module.state_dict()[self.key].detach().clone()


def test_a_decay_outside_0_1_is_one_line():
    from skuvision.callbacks.ema import WeightEMA

    with pytest.raises(ConfigError, match=r"callbacks.ema.decay=1.5: must be in \(0, 1\)"):
        WeightEMA(decay=1.5)
