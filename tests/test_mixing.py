import json

import pytest
import torch
import torch.nn.functional as F

from skuvision.errors import ConfigError
from skuvision.model.mixing import BatchMix, check_mix
from skuvision.train import run

from helpers import FAST_TRAIN, compose_train_cfg


def constant_batch(n: int = 4, size: int = 24) -> torch.Tensor:
    """Image i is the constant i + 1 in every pixel: which pixels came from which image is readable."""
    return torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()


def test_cutmix_weight_is_the_share_of_each_image_left_uncut():
    images = constant_batch()
    mix = BatchMix(cutmix_alpha=1.0)
    seen_partial = False
    for seed in range(40):
        torch.manual_seed(seed)
        mixed, lam = mix(images)
        for i in range(len(images)):
            own = (mixed[i] == i + 1).float().mean().item()
            partner = (mixed[i] == len(images) - i).float().mean().item()  # the reversed batch's image
            assert own == pytest.approx(lam) and partner == pytest.approx(1 - lam)
        seen_partial |= 0.05 < lam < 0.95
    assert seen_partial  # the boxes are not all empty or all full


def test_mixup_blends_each_image_with_its_mirror_in_the_batch_by_the_weight():
    images = constant_batch()
    torch.manual_seed(3)
    mixed, lam = BatchMix(mixup_alpha=0.4)(images)
    assert 0 < lam < 1
    expected = torch.tensor([lam * (i + 1) + (1 - lam) * (len(images) - i) for i in range(len(images))])
    assert torch.allclose(mixed[:, 0, 0, 0], expected)
    # off (the default), or skipped by prob: the batch comes back untouched with weight 1
    assert BatchMix()(images) == (images, 1.0)
    assert BatchMix(cutmix_alpha=1.0, prob=0.0)(images) == (images, 1.0)


@pytest.mark.parametrize(
    "mix, expected",
    [
        ({"cutmix_alpha": -1}, "model.mix.cutmix_alpha=-1.0: must be >= 0"),
        ({"prob": 1.5}, "model.mix.prob=1.5: must be in [0, 1]"),
        ({"alpha": 1.0}, "model.mix.alpha: unknown key"),
        ({"mixup_alpha": "lots"}, "model.mix.mixup_alpha='lots': must be a number"),
    ],
)
def test_bad_mix_settings_name_the_key(mix, expected):
    with pytest.raises(ConfigError, match="^" + expected.replace("[", r"\[").replace("]", r"\]")):
        check_mix(mix)


def test_training_loss_mixes_the_targets_of_every_head_with_the_same_weight(tiny_shards, tmp_path):
    """The SKU head and the brand/category heads: lam * loss(own) + (1 - lam) * loss(partner's)."""
    from hydra.utils import instantiate

    cfg = compose_train_cfg(tmp_path, [f"data.root={tiny_shards}", *FAST_TRAIN, "model.mix.cutmix_alpha=1.0"])
    dm = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, num_classes=dm.num_classes, label_map=dm.label_map.to_dict(), _convert_="all")
    assert set(model.aux) == {"brand", "category"}
    model.eval()  # no dropout: the same forward twice
    with torch.no_grad():  # confident heads: an untrained model's near-uniform logits score every target alike
        for head in (model.head, *model.aux.values()):
            for p in head.parameters():
                p.mul_(40)
    images = torch.randn(6, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    torch.manual_seed(7)
    loss = model._step({"image": images, "label": labels}, "train")

    torch.manual_seed(7)
    mixed, lam = model.mixer(images)
    assert 0 < lam < 1
    with torch.no_grad():
        features = model.backbone(mixed)

        def ce(out, targets, smooth=0.0):
            return lam * F.cross_entropy(out, targets, label_smoothing=smooth) + (1 - lam) * F.cross_entropy(
                out, targets.flip(0), label_smoothing=smooth
            )

        expected = ce(model.head(features), labels, model.hparams.label_smoothing)
        for kind, head in model.aux.items():
            expected = expected + model.hparams.aux_weight * ce(
                head(features), getattr(model, f"{kind}_of_class")[labels]
            )
        own_targets_only = F.cross_entropy(model.head(features), labels, label_smoothing=model.hparams.label_smoothing)
        for kind, head in model.aux.items():
            own_targets_only = own_targets_only + model.hparams.aux_weight * F.cross_entropy(
                head(features), getattr(model, f"{kind}_of_class")[labels]
            )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(loss.item() - own_targets_only.item()) > 1e-3 * loss.item()  # 100x the tolerance: partners count
    # validation never mixes: the loss of the images as they are
    torch.manual_seed(7)
    with torch.no_grad():
        features = model.backbone(images)
        unmixed = F.cross_entropy(model.head(features), labels) + sum(
            model.hparams.aux_weight * F.cross_entropy(head(features), getattr(model, f"{kind}_of_class")[labels])
            for kind, head in model.aux.items()
        )
    assert model._step({"image": images, "label": labels}, "val").item() == pytest.approx(unmixed.item(), rel=1e-5)


def test_a_run_with_cutmix_trains_and_keeps_its_setting_in_the_checkpoint(tiny_shards, tmp_path):
    overrides = [f"data.root={tiny_shards}", *FAST_TRAIN, "model.mix.cutmix_alpha=1.0", "model.mix.mixup_alpha=0.2"]
    run(compose_train_cfg(tmp_path, overrides))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "test/top1" in metrics
    ckpt = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["mix"] == {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "prob": 1.0, "switch_prob": 0.5}


def test_train_config_checks_mix_before_anything_runs(tiny_shards, tmp_path):
    from skuvision.config.schema import validate

    cfg = compose_train_cfg(tmp_path, [f"data.root={tiny_shards}", *FAST_TRAIN, "model.mix.switch_prob=2"])
    with pytest.raises(ConfigError, match=r"^model.mix.switch_prob=2.0: must be in \[0, 1\]"):
        validate(cfg)
