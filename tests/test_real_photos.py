"""Real photos, fast: the pretrained recipe learns ~12 phone photos per class; from scratch does not.

tests/data/grocery holds 6 GroceryStoreDataset classes (12 train / 4 val / 4 test photos each, the
data set's own split, MIT licence) listed in a CSV with brand (coarse class), category and split.
This is issue 10's finding in miniature: a new user with a few dozen real photos per product gets
a model that learns only from a pretrained backbone.
"""

import json
from pathlib import Path

import pytest

from skuvision.train import run

from helpers import compose_train_cfg

GROCERY_CSV = Path(__file__).parent / "data" / "grocery" / "grocery.csv"
CHANCE = 1 / 6
SHORT_RUN = [
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.max_epochs=4",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "logger=csv",
]


@pytest.fixture(scope="module")
def grocery_shards(tmp_path_factory) -> Path:
    from skuvision.data.shards import BuildSettings, build_shards

    out = tmp_path_factory.mktemp("grocery") / "shards"
    build_shards(GROCERY_CSV, out, BuildSettings(size=144, val=0.15, test=0.15), progress=False)
    return out


def _train(shards: Path, tmp_path: Path, overrides: list[str]) -> dict:
    cfg = compose_train_cfg(tmp_path, [f"data.root={shards}", *SHORT_RUN, *overrides])
    run(cfg)
    return json.loads((tmp_path / "metrics.json").read_text())


def test_pretrained_recipe_learns_real_photos_from_scratch_does_not(grocery_shards, tmp_path):
    manifest = json.loads((grocery_shards / "manifest.json").read_text())
    assert manifest["num_classes"] == 6 and sum(s["count"] for s in manifest["splits"].values()) == 120
    # the default recipe (experiment=quickstart: embedded ImageNet Lite0, FC heads) with the whole
    # backbone frozen, which a four-epoch run of 9 steps of 8 photos suits best (stages 4-5 trained
    # on such batches: test top-1 0.79-0.92); lr kept at 0.002 per batch for this run's batch of 8
    pretrained = _train(grocery_shards, tmp_path / "pretrained", ["model.freeze_depth=5", "model.optimizer.lr=0.064"])
    scratch = _train(grocery_shards, tmp_path / "scratch", ["experiment=scratch", "model.optimizer.lr=0.096"])
    # measured: pretrained 1.00 val and test; scratch 0.58 val, 0.62 test (the classes differ in colour,
    # which even random init picks up; what it cannot learn from 12 photos is the rest)
    assert pretrained["test/top1"] >= 0.9 and pretrained["val/top1"] >= 0.9, pretrained
    assert scratch["test/top1"] <= pretrained["test/top1"] - 0.2, (scratch["test/top1"], pretrained["test/top1"])
    assert pretrained["params/trainable"] < 0.25 * pretrained["params/total"]
    # each of these SKUs is its own coarse class (brand), so brand accuracy from the SKU head is the same
    assert pretrained["test/brand_top1"] == pretrained["test/top1"] and pretrained["test/brand_top5"] == 1.0


def test_the_photos_experiment_is_the_quickstart_model_with_real_photo_augmentation(grocery_shards, tmp_path):
    """experiment=photos: what BENCHMARKS.md measured on GroceryStoreDataset, for a user's own shards."""
    from skuvision.config.compose import compose
    from skuvision.config.schema import validate

    photos = compose(["experiment=photos", f"data.root={grocery_shards}"])
    quickstart = compose([f"data.root={grocery_shards}"])
    validate(photos)
    assert photos.model.backbone == quickstart.model.backbone and photos.model.pretrained
    assert photos.model.optimizer == quickstart.model.optimizer and photos.model.head == quickstart.model.head
    assert (photos.model.freeze_depth, photos.data.image_size, photos.trainer.max_epochs) == (4, 160, 15)
    assert photos.data.synthetic is None and photos.trainer.accelerator == "auto"
    augment, light = photos.data.augment, quickstart.data.augment
    assert augment.hflip == 0.0  # packaging text is never mirrored
    assert augment.scale_min < light.scale_min and augment.rotation_degrees > light.rotation_degrees
    assert augment.brightness > light.brightness and augment.hue > light.hue
    # chosen on val over five trained models; the test only, so val and the best checkpoint keep one view
    assert (photos.data.test_crops, photos.data.test_crop_pct) == (5, 0.75)
    assert (quickstart.data.test_crops, quickstart.data.test_crop_pct) == (1, None)


def test_the_photos_experiment_without_data_root_says_what_to_pass(tmp_path):
    from helpers import run_cli

    result = run_cli("train.py", "experiment=photos", f"hydra.run.dir={tmp_path}", env={"SM_CHANNEL_TRAIN": ""})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "skuvision: error: data.root is required" in result.stderr
