"""The embedded ImageNet backbone: tensors in the right places, and the preprocessing its weights need."""

from pathlib import Path

import pytest
import torch
from torchvision.io import read_image

from skuvision.data.preprocess import preprocess_spec
from skuvision.data.transforms import eval_transform
from skuvision.errors import ConfigError
from skuvision.model.backbone import build_backbone, create_timm_model
from skuvision.model.pretrained import convert_state, embedded_weights_path

DATA = Path(__file__).parent / "data"
PHOTOS = {"banana.jpg": 954, "lemon.jpg": 951, "zucchini.jpg": 939}  # ImageNet class indices


def _photos(size: int = 224) -> torch.Tensor:
    transform = eval_transform(preprocess_spec("efficientnet_lite0", size))
    return torch.stack([transform(read_image(str(DATA / "imagenet" / name))) for name in PHOTOS])


def test_embedded_weights_name_real_photos_as_imagenet_classes():
    """Swapped same-shape tensors would still load strict=True; only behaviour shows the mapping is right."""
    model = create_timm_model("efficientnet_lite0", pretrained=True, num_classes=1000).eval()
    with torch.no_grad():
        probs = model(_photos()).softmax(1)
    assert probs.argmax(1).tolist() == list(PHOTOS.values())
    assert (probs[torch.arange(3), list(PHOTOS.values())] > 0.5).all(), probs.max(1)


def test_headless_backbone_gets_every_tensor_but_imagenet_classifier():
    headless = create_timm_model("efficientnet_lite0", pretrained=True).eval()
    full = create_timm_model("efficientnet_lite0", pretrained=True, num_classes=1000).eval()
    assert (
        sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in headless.parameters()) == 1280 * 1000 + 1000
    )
    x = _photos()
    with torch.no_grad():
        assert torch.allclose(headless(x), full.forward_head(full.forward_features(x), pre_logits=True), atol=1e-5)
    random_init = create_timm_model("efficientnet_lite0", pretrained=False)
    assert not torch.equal(random_init.conv_stem.weight, headless.conv_stem.weight)


def test_wrong_file_is_one_clear_error():
    source = torch.load(embedded_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    target = create_timm_model("resnet10t").state_dict()
    with pytest.raises(ConfigError, match="tensors for a model with"):
        convert_state(source, target, "x.pth")
    lite = create_timm_model("efficientnet_lite0").state_dict()
    swapped = dict(source)
    swapped["_conv_stem.weight"] = source["_conv_stem.weight"].transpose(0, 1)  # (3, 32, 3, 3): wrong shape
    with pytest.raises(ConfigError, match="does not fit conv_stem.weight"):
        convert_state(swapped, lite, "x.pth")


def test_preprocessing_follows_the_weights_pretrained_config():
    """Lite0's embedded weights were trained in TensorFlow on [-1, 1] inputs; ResNets on ImageNet mean/std."""
    lite = preprocess_spec("efficientnet_lite0", 224)
    assert lite["config_source"] == "tf_efficientnet_lite0"
    assert (lite["mean"], lite["std"], lite["interpolation"]) == ([0.5] * 3, [0.5] * 3, "bicubic")
    assert (lite["resize"], lite["crop"]) == (256, 224)
    resnet = preprocess_spec("resnet152", 224)
    assert resnet["mean"] == pytest.approx([0.485, 0.456, 0.406]) and resnet["crop_pct"] == 0.95
    assert resnet["resize"] == 235


def test_efficientnet_freeze_depths_cover_its_five_stages():
    counts = []
    for depth in range(6):
        backbone = build_backbone("efficientnet_lite0", depth)
        counts.append(sum(p.numel() for p in backbone.parameters() if p.requires_grad))
    assert all(a > b for a, b in zip(counts, counts[1:])), counts
    assert counts[0] == 3_371_008 and counts[5] == 0
    names = [row[0] for row in build_backbone("efficientnet_lite0", 4).stage_parameters()]
    assert names[0].startswith("stage1 (conv_stem, bn1, blocks.0)") and "conv_head" in names[4]


def test_data_module_normalises_as_the_backbone_weights_need(tiny_shards):
    from skuvision.config.data_module import shard_data_module

    white = torch.full((3, 80, 100), 255, dtype=torch.uint8)
    black = torch.zeros((3, 80, 100), dtype=torch.uint8)
    for backbone, white_value in (("efficientnet_lite0", 1.0), ("resnet10t", (1 - 0.485) / 0.229)):
        # no colour jitter: a darkening draw would keep white below the clamp (the check was order-dependent)
        no_jitter = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
        dm = shard_data_module(
            str(tiny_shards), image_size=48, batch_size=4, num_workers=0, backbone=backbone, augment=no_jitter
        )
        evaluate, train = dm._dataset("val").image_transform, dm._dataset("train").image_transform
        assert evaluate(white).shape == (3, 48, 48)
        assert evaluate(white)[0].mean().item() == pytest.approx(white_value, abs=1e-3)
        assert train(white)[0].max().item() == pytest.approx(white_value, abs=1e-3)  # the clamp's upper bound
        if backbone == "efficientnet_lite0":
            assert evaluate(black).mean().item() == pytest.approx(-1.0, abs=1e-3)
            assert train.mode == "bicubic"


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_name_real_photos_as_imagenet_classes(name):
    """The same behavioural check as Lite0's, with each model's own preprocessing (tf_ config)."""
    spec = preprocess_spec(name, 224)
    assert spec["config_source"] == f"tf_{name}"
    assert (spec["mean"], spec["std"], spec["interpolation"]) == ([0.5] * 3, [0.5] * 3, "bicubic")
    assert spec["crop_pct"] == {"efficientnet_lite1": 0.882, "efficientnet_lite2": 0.89}[name]
    transform = eval_transform(spec)
    photos = torch.stack([transform(read_image(str(DATA / "imagenet" / photo))) for photo in PHOTOS])
    model = create_timm_model(name, pretrained=True, num_classes=1000).eval()
    with torch.no_grad():
        probs = model(photos).softmax(1)
    assert probs.argmax(1).tolist() == list(PHOTOS.values())
    headless = create_timm_model(name, pretrained=True).eval()
    with torch.no_grad():
        assert torch.allclose(
            headless(photos), model.forward_head(model.forward_features(photos), pre_logits=True), atol=1e-5
        )


def test_weights_of_another_lite_are_one_clear_error():
    source = torch.load(embedded_weights_path("efficientnet_lite1"), map_location="cpu", weights_only=True)
    with pytest.raises(ConfigError, match="does not fit"):
        convert_state(source, create_timm_model("efficientnet_lite2").state_dict(), "lite1.pth")
