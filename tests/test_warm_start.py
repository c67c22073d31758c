"""``init_from``: a new training run from another run's weights, SKU rows matched by id (issue 21, item 4)."""

from __future__ import annotations

import json

import pytest
import torch

from skuvision.data.labels import LabelMap
from skuvision.errors import ConfigError
from skuvision.model.module import SKUClassifier
from skuvision.model.warm_start import warm_start

from helpers import FAST_TRAIN, one_error_line, run_cli

HEAD = {"hidden_dims": [64], "dropout": 0.1}  # FAST_TRAIN's head


def _label_map(skus: list[str]) -> dict:
    """SKUs at their list positions, each its own brand in two categories (so both aux heads exist)."""
    return {
        "sku_to_index": {s: i for i, s in enumerate(skus)},
        "brands": {s: f"brand-{s}" for s in skus},
        "categories": {s: f"cat-{i % 2}" for i, s in enumerate(skus)},
    }


def _model(skus: list[str], seed: int, backbone: str = "resnet10t") -> SKUClassifier:
    torch.manual_seed(seed)
    return SKUClassifier(len(skus), backbone=backbone, freeze_depth=0, head=HEAD, label_map=_label_map(skus))


def _save(model: SKUClassifier, path) -> str:
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "label_map": model.label_map}
    torch.save(ckpt, path)
    return str(path)


def test_rows_follow_the_sku_id_and_new_skus_keep_their_fresh_rows(tmp_path):
    old = _model(["a", "b", "c", "d"], seed=0)
    path = _save(old, tmp_path / "old.ckpt")
    new = _model(["e", "c", "a", "b", "d"], seed=1)  # one new SKU, the old ones at other indices
    fresh = {k: v.clone() for k, v in new.state_dict().items()}

    carried = warm_start(new, path)

    assert carried["skus_carried"] == 4 and carried["skus_new"] == 1
    old_state, new_state = old.state_dict(), new.state_dict()
    last = f"head.{len(new.head) - 1}"
    for key in old_state:
        if not key.startswith((last, "aux.")):
            assert torch.equal(new_state[key], old_state[key]), key
    then, now = LabelMap.from_dict(old.label_map), LabelMap.from_dict(new.label_map)
    for sku in ("a", "b", "c", "d"):
        i, j = now.sku_to_index[sku], then.sku_to_index[sku]
        assert torch.equal(new_state[f"{last}.weight"][i], old_state[f"{last}.weight"][j]), sku
        assert torch.equal(new_state[f"{last}.bias"][i], old_state[f"{last}.bias"][j]), sku
    e = now.sku_to_index["e"]
    assert torch.equal(new_state[f"{last}.weight"][e], fresh[f"{last}.weight"][e])
    brand_now, brand_then = now.attribute_vocab("brand"), then.attribute_vocab("brand")
    for name in brand_then:
        assert torch.equal(
            new_state["aux.brand.weight"][brand_now.index(name)], old_state["aux.brand.weight"][brand_then.index(name)]
        )


@pytest.mark.parametrize(
    "make_other, message",
    [
        (lambda: _model(["a", "b"], seed=0, backbone="resnet18"), "its model differs from this run's at backbone."),
        (lambda: None, "not a readable checkpoint"),
    ],
)
def test_a_checkpoint_of_another_model_is_refused_in_one_line(tmp_path, make_other, message):
    other = make_other()
    path = tmp_path / "other.ckpt"
    if other is None:
        path.write_bytes(b"not a checkpoint")
    else:
        _save(other, path)
    with pytest.raises(ConfigError, match=f"init_from={path}: .*{message}"):
        warm_start(_model(["a", "b"], seed=1), str(path))


@pytest.mark.slow  # 10-25 s: the fast suite stays under ~10 min on 2 cores
def test_train_py_starts_from_the_checkpoint_and_trains(tiny_shards, tmp_path):
    skus = LabelMap.from_dict(json.loads((tiny_shards / "manifest.json").read_text())["label_map"]).skus
    known = skus[:-1]  # the checkpoint predates the last SKU
    path = _save(_model(known, seed=0), tmp_path / "month.ckpt")
    run_dir = tmp_path / "run"
    common = [f"data.root={tiny_shards}", *FAST_TRAIN, "trainer.max_epochs=1", "logger=csv"]

    result = run_cli("train.py", *common, f"init_from={path}", f"hydra.run.dir={run_dir}", timeout=600)

    assert result.returncode == 0, result.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert f"init_from {path}: " in log and f"{len(known)} SKU rows carried over, 1 new SKUs start fresh" in log
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 1

    missing = run_cli("train.py", *common, f"init_from={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path / 'r2'}")
    assert "init_from=" in one_error_line(missing) and "file not found" in one_error_line(missing)
