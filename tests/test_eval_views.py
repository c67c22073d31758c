"""Eval-time views (``data.test_crops``, ``skuvision evaluate --crops``): several crops of one test image
scored as one prediction, the same way in a training run's test and in ``evaluate``."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.transforms import v2

from skuvision.data.preprocess import preprocess_spec
from skuvision.data.transforms import crop_boxes, eval_transform
from skuvision.errors import ConfigError
from skuvision.model.views import average_views

from helpers import FAST_TRAIN, compose_train_cfg

SPEC = preprocess_spec("efficientnet_lite0", 160)  # resize 182, crop 160


@pytest.mark.parametrize("shape", [(3, 320, 400), (3, 401, 320), (3, 333, 333)])
def test_views_are_the_centre_crop_then_the_corners_of_the_same_resize(shape):
    image = torch.randint(0, 256, shape, dtype=torch.uint8)
    one = eval_transform(SPEC)(image)
    five = eval_transform(SPEC, 5)(image)
    three = eval_transform(SPEC, 3)(image)
    assert one.shape == (3, 160, 160) and five.shape == (5, 3, 160, 160) and three.shape == (3, 3, 160, 160)
    assert torch.equal(five[0], one) and torch.equal(three[0], one)  # the one-crop image, bit for bit
    full = eval_transform(SPEC).transforms[0](image)  # the resize alone
    height, width = full.shape[-2:]
    assert min(height, width) == SPEC["resize"]
    corners = [(0, 0), (0, width - 160), (height - 160, 0), (height - 160, width - 160)]
    normalise = v2.Compose(eval_transform(SPEC).transforms[2:])  # ToDtype, Normalize
    for view, (top, left) in zip(five[1:], corners):
        assert torch.equal(view, normalise(full[:, top : top + 160, left : left + 160]))
    # three views run along the long side: the ends of a landscape image's width, a portrait image's height
    boxes = crop_boxes(height, width, 160, 3)
    varying = {b[1] for b in boxes} if width > height else {b[0] for b in boxes}
    assert len(varying) == (3 if width != height else 1)


def test_views_average_their_softmax_as_log_probabilities():
    logits = torch.randn(4 * 5, 7)
    got = average_views(logits, 5)
    want = logits.softmax(-1).view(4, 5, 7).mean(1).log()
    assert got.shape == (4, 7) and torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(got.softmax(-1), want.exp(), atol=1e-6)  # valid logits: softmax gives the mean back
    same = logits[:4].repeat_interleave(3, dim=0)  # three identical views: the one view's prediction
    assert torch.allclose(average_views(same, 3), logits[:4].log_softmax(-1), atol=1e-6)
    assert average_views(logits, 1) is logits


@pytest.mark.parametrize("crops", [0, 2, 4])
def test_a_view_count_other_than_1_3_5_is_one_line_before_anything_runs(crops, tiny_shards, tmp_path):
    from skuvision.config.schema import validate

    cfg = compose_train_cfg(tmp_path, [f"data.root={tiny_shards}", *FAST_TRAIN, f"data.test_crops={crops}"])
    with pytest.raises(ConfigError, match=rf"^data.test_crops={crops}: use 1 \(the centre crop\), 3 .* or 5"):
        validate(cfg)


@pytest.mark.parametrize(("override", "message"), [("data.test_crop_pct=0", "0.0"), ("data.test_crop_pct=1.5", "1.5")])
def test_a_test_crop_pct_outside_0_1_is_one_line_before_anything_runs(override, message, tiny_shards, tmp_path):
    from skuvision.config.schema import validate

    cfg = compose_train_cfg(tmp_path, [f"data.root={tiny_shards}", *FAST_TRAIN, override])
    with pytest.raises(ConfigError, match=rf"^data.test_crop_pct={message}: must be in \(0, 1\]"):
        validate(cfg)


def test_a_closer_test_view_resizes_the_shorter_side_to_crop_over_crop_pct():
    from skuvision.data.preprocess import with_crop_pct

    closer = with_crop_pct(SPEC, 0.75)
    assert (closer["resize"], closer["crop"], closer["crop_pct"]) == (213, 160, 0.75)  # floor(160 / 0.75)
    assert {k: v for k, v in closer.items() if k not in ("resize", "crop_pct")} == {
        k: v for k, v in SPEC.items() if k not in ("resize", "crop_pct")
    }
    assert with_crop_pct(SPEC, None) is SPEC
    image = torch.randint(0, 256, (3, 348, 348), dtype=torch.uint8)
    centre = eval_transform(closer)(image)
    full = eval_transform(closer).transforms[0](image)
    assert full.shape[-2:] == (213, 213) and torch.equal(
        centre, v2.Compose(eval_transform(SPEC).transforms[2:])(full[:, 26:186, 26:186])
    )


def test_a_run_tested_on_five_crops_and_evaluate_with_crops_5_agree(tiny_shards, tmp_path, capsys):
    """The training run's test (the model's step on (N, 5, 3, S, S) batches) and ``skuvision evaluate --crops 5``
    (the predictor on flattened views) are two paths to one figure, at the run's own crop_pct or another."""
    from skuvision.export.evaluate import evaluate
    from skuvision.train import run

    run_dir = tmp_path / "run"
    overrides = [f"data.root={tiny_shards}", *FAST_TRAIN, "data.test_crops=5", "data.test_crop_pct=0.8", "logger=csv"]
    run(compose_train_cfg(run_dir, overrides))
    trained = json.loads((run_dir / "metrics.json").read_text())
    five, five_dir = evaluate(
        trained["best_checkpoint"], str(tiny_shards), out=str(tmp_path / "e5"), progress=False, crops=5, crop_pct=0.8
    )
    one, _ = evaluate(trained["best_checkpoint"], str(tiny_shards), out=str(tmp_path / "e1"), progress=False)
    for key in ("test/top1", "test/top5", "test/brand_top1", "test/brand_top5"):
        assert five[key] == pytest.approx(trained[key], abs=1e-6), key
    assert (five_dir / "confusions.csv").read_text() == (run_dir / "confusions.csv").read_text()
    assert (five["crops"], five["crop_pct"], one["crops"], one["crop_pct"]) == (5, 0.8, 1, 0.875)
    assert (trained["test/crops"], trained["test/crop_pct"]) == (5, 0.8)  # metrics.json says what test/top1 means
    assert five["images"] == one["images"] > 0
    # the views change this model's answers: the agreement above is the five-crop figure's, not the centre crop's
    assert (one["test/top1"], one["test/top5"]) != (five["test/top1"], five["test/top5"])
    from skuvision.cli import main

    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                trained["best_checkpoint"],
                str(tiny_shards),
                "--crops",
                "5",
                "--crop-pct",
                "0.8",
                "--quiet",
                "--out",
                str(tmp_path / "cli"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"test/top1 {trained['test/top1']:.4f}" in out and "5 crops each at crop_pct 0.8" in out, out


def test_the_model_card_says_the_test_used_views_the_export_does_not(tiny_shards, tmp_path):
    """An export predicts one centre crop; a card quoting a five-crop test figure must say so and how to get both."""
    from omegaconf import OmegaConf

    from skuvision.export.bundle import export_checkpoint
    from skuvision.train import run

    run_dir = tmp_path / "run"
    overrides = [f"data.root={tiny_shards}", *FAST_TRAIN, "trainer.max_epochs=1", "data.test_crops=3", "logger=csv"]
    cfg = compose_train_cfg(run_dir, overrides)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # what Hydra writes: the card finds the run from it
    run(cfg)
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert (trained["test/crops"], trained["test/crop_pct"]) == (3, 0.875)
    export_checkpoint(trained["best_checkpoint"], tmp_path / "export", force=True)
    card = (tmp_path / "export" / "model_card.md").read_text()
    assert "the test scored each photo as 3 crops at crop_pct 0.8750" in card
    assert "this export predicts one centre crop" in card and "--crops 3 --crop-pct 0.875" in card
