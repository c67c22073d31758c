"""The fast train transforms do what torchvision's would, and both augmentation paths plug into training.

Geometry and colour are checked against torchvision's own functional ops on a rendered product
photo; speed is not asserted here (see scripts/benchmark_input.py and BENCHMARKS.md).
"""

from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path

import pytest
import torch
from torchvision.io import read_image
from torchvision.transforms.v2 import functional as F

from skuvision.data.device_augment import DeviceAugment, pad_collate
from skuvision.data.imageio import decode_to_tensor
from skuvision.data.transforms import AugmentConfig, TrainTransform, colour_matrix

from helpers import FAST_TRAIN, compose_train_cfg, run_cli

STILL = dict(scale_min=1.0, rotation_degrees=0.0, hflip=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
RAW = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # no normalisation: outputs in 0..1


def photo(size=(320, 320), index: int = 0) -> torch.Tensor:
    from skuvision.data.synthetic import make_catalogue, render_view

    img = render_view(make_catalogue(3, seed=2)[index], 2, index, 400).resize((size[1], size[0]))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return decode_to_tensor(buf.getvalue())


def levels(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference in 0..255 grey levels."""
    return float((a.float() - b.float()).abs().mean())


def test_train_transform_geometry_matches_torchvision():
    x = photo()
    still = TrainTransform(224, AugmentConfig(**STILL), **RAW)
    resized = F.resize(x, [224, 224], antialias=True)
    assert levels(still(x) * 255, resized) < 1.5  # whole-image crop = a resize
    flipped = TrainTransform(224, AugmentConfig(**{**STILL, "hflip": 1.0}), **RAW)
    assert levels(flipped(x) * 255, resized.flip(-1)) < 1.5
    rotating = TrainTransform(320, AugmentConfig(**{**STILL, "rotation_degrees": 12.0}), **RAW)
    random.seed(5)
    out = rotating(x) * 255
    random.seed(5)
    rotating.crop_box(320, 320)
    angle = random.uniform(-12.0, 12.0)
    assert abs(angle) > 3
    ref = F.rotate(x.float(), angle, interpolation=F.InterpolationMode.BILINEAR)
    assert levels(out, ref) < 0.05  # same angle, same direction, same centre
    assert levels(out, F.rotate(x.float(), -angle, interpolation=F.InterpolationMode.BILINEAR)) > 5
    big = F.resize(x, [1000, 1000], antialias=True)  # a 4.5x shrink goes through the antialiased pre-shrink
    assert levels(still(big) * 255, F.resize(big, [224, 224], antialias=True)) < 1.5


def test_train_transform_output_is_normalised_and_varies():
    x = photo()
    t = TrainTransform(96)
    outs = torch.stack([t(x) for _ in range(8)])
    assert outs.shape == (8, 3, 96, 96) and outs.dtype == torch.float32
    assert -2.2 < float(outs.min()) and float(outs.max()) < 2.7  # ImageNet-normalised 0..255
    assert float((outs[0] - outs[1]).abs().mean()) > 0.05  # random crops differ


@pytest.mark.parametrize("factors", [(1.25, 1, 1, 0), (1, 0.7, 1, 0), (1, 1, 0.8, 0), (1.1, 0.8, 1.2, 0)])
def test_colour_matrix_equals_torchvision_colour_ops(factors):
    b, c, s, _ = factors
    x = photo().float()
    ref = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(x / 255, b), c), s) * 255
    mean_grey = float(F.rgb_to_grayscale(x).mean())
    matrix, offset = colour_matrix(b, c, s, 0.0, mean_grey)
    ours = (torch.tensor(matrix) @ x.view(3, -1) + torch.tensor(offset).view(3, 1)).clamp(0, 255).view_as(x)
    # exact for one op; combined, torchvision clamps after each op and we clamp once (bright
    # backgrounds clipped by the brightness gain): still < 1 grey level against a ~15 level effect
    assert levels(ours, ref) < (0.05 if (b, c) in ((1.25, 1), (1, 0.7), (1, 1)) else 1.0)
    assert levels(ref, x) > 5


def test_hue_rotation_moves_colours_the_way_torchvision_hue_does():
    x = photo().float()
    ref = F.adjust_hue(x / 255, 0.05) * 255
    matrix, offset = colour_matrix(1, 1, 1, 0.05, 0.0)
    ours = (torch.tensor(matrix) @ x.view(3, -1)).clamp(0, 255).view_as(x)
    ours_shift, ref_shift = (ours - x).flatten(), (ref - x).flatten()
    cosine = float(ours_shift @ ref_shift / (ours_shift.norm() * ref_shift.norm()))
    assert cosine > 0.7  # the same direction as the HSV shift (-1 if reversed, ~0 if unrelated)
    assert 0.9 < levels(ours, x) / levels(ref, x) < 1.5  # and about the same size
    grey = torch.full((3, 4, 4), 120.0)
    assert levels((torch.tensor(matrix) @ grey.view(3, -1)).view_as(grey), grey) < 1e-3  # greys stay grey


def test_device_augment_matches_per_image_path_on_padded_mixed_sizes():
    images = [photo((320, 320), 0), photo((300, 400), 1)]
    batch = pad_collate([{"image": x, "label": k} for k, x in enumerate(images)])
    assert batch["image"].shape == (2, 3, 320, 400) and batch["image"].dtype == torch.uint8
    still = DeviceAugment(224, AugmentConfig(**STILL), **RAW)
    out = still(batch["image"], batch["sizes"]) * 255
    for k, x in enumerate(images):  # each image's own extent is sampled, never the padding
        assert levels(out[k], F.resize(x, [224, 224], antialias=True)) < 1.5
    jitter = DeviceAugment(64)
    factors = torch.tensor([[1.2, 0.9], [0.8, 1.1], [1.1, 0.9], [0.02, -0.015]])
    pixels = torch.rand(2, 3, 64, 64) * 255
    dev = jitter.colour(pixels, factors)
    per_image = TrainTransform(64)
    for k in range(2):
        means = pixels[k].flatten(1)[:, ::7].mean(1).tolist()
        grey = sum(w * m for w, m in zip((0.2989, 0.587, 0.114), means))
        matrix, offset = colour_matrix(*factors[:, k].tolist(), grey)
        m = torch.tensor([[sc * v for v in row] for sc, row in zip(per_image._scale, matrix)])
        o = torch.tensor([[sc * v + sh] for sc, v, sh in zip(per_image._scale, offset, per_image._shift)])
        ref = m @ pixels[k].view(3, -1) + o
        for ch in range(3):
            ref[ch].clamp_(per_image._lo[ch], per_image._hi[ch])
        assert torch.allclose(dev[k].view(3, -1), ref, atol=1e-4)


def test_datamodule_augments_on_device_after_transfer(tiny_shards):
    from skuvision.config.data_module import shard_data_module

    dm = shard_data_module(str(tiny_shards), image_size=40, batch_size=4, num_workers=0, augment_on_device=True)
    dm.setup("fit")
    raw = next(iter(dm.train_dataloader()))
    assert raw["image"].dtype == torch.uint8 and raw["sizes"].shape == (4, 2)  # workers only decoded
    batch = dm.on_after_batch_transfer(raw, 0)
    assert batch["image"].shape == (4, 3, 40, 40) and batch["image"].dtype == torch.float32
    assert "sizes" not in batch and torch.equal(batch["label"], raw["label"])
    assert -3 < float(batch["image"].mean()) < 3
    val = next(iter(dm.val_dataloader()))
    assert val["image"].dtype == torch.float32 and dm.on_after_batch_transfer(val, 0) is val


def test_decode_on_device_gives_the_batch_the_workers_would_have_decoded(tiny_shards):
    from skuvision.config.data_module import shard_data_module
    from skuvision.errors import ConfigError

    decoded_by_workers = shard_data_module(
        str(tiny_shards), image_size=40, batch_size=4, num_workers=0, augment_on_device=True
    )
    bytes_only = shard_data_module(
        str(tiny_shards), image_size=40, batch_size=4, num_workers=0, augment_on_device=True, decode_on_device=True
    )
    for dm in (decoded_by_workers, bytes_only):
        dm.setup("fit")
    want = next(iter(decoded_by_workers.train_dataloader()))
    raw = next(iter(bytes_only.train_dataloader()))
    assert isinstance(raw["jpeg"], list) and raw["jpeg"][0].dtype == torch.uint8 and raw["jpeg"][0].dim() == 1
    got = bytes_only.on_before_batch_transfer(raw, 0)  # batched decode_jpeg (nvJPEG on a GPU; here the CPU)
    assert torch.equal(got["image"], want["image"]) and torch.equal(got["sizes"], want["sizes"])
    assert torch.equal(got["label"], want["label"])
    batch = bytes_only.on_after_batch_transfer(got, 0)
    assert batch["image"].shape == (4, 3, 40, 40) and batch["image"].dtype == torch.float32
    with pytest.raises(ConfigError, match="data.decode_on_device=true needs data.augment_on_device=true"):
        shard_data_module(str(tiny_shards), decode_on_device=True)


@pytest.mark.parametrize("decode", ["false", "true"])
def test_training_runs_with_augmentation_on_the_device(decode, tiny_shards, tmp_path):
    from skuvision.train import run

    cfg = compose_train_cfg(
        tmp_path,
        [
            f"data.root={tiny_shards}",
            *FAST_TRAIN,
            "trainer.max_epochs=1",
            "data.augment_on_device=true",
            f"data.decode_on_device={decode}",
        ],
    )
    run(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "test/top1" in metrics and metrics["epochs"] == 1


def test_benchmark_scripts_explain_themselves():
    for script in ("scripts/benchmark_input.py", "scripts/benchmark_scale.py", "scripts/benchmark_dedup.py"):
        result = run_cli(script, "--help", timeout=60)
        assert result.returncode == 0 and "--json" in result.stdout, result.stderr


@pytest.mark.slow
def test_benchmark_input_runs_end_to_end_on_a_tiny_set(tmp_path):
    result = run_cli(
        "scripts/benchmark_input.py",
        "--data-dir",
        str(tmp_path),
        "--skus",
        "2",
        "--images-per-sku",
        "10",
        "--original-size",
        "240",
        "--batch-size",
        "4",
        "--repeats",
        "1",
        "--seconds",
        "0.3",
        "--no-markdown",
        "--json",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    for key in ("imagefolder_img_s", "shards_img_s", "decode_img_s"):
        assert figures[key] > 0


class _FixedCrop(TrainTransform):
    """The train transform with one crop, as fractions of the image: the same region at any shard size."""

    def crop_box(self, height: int, width: int) -> tuple[float, float, float, float]:
        return 0.1 * height, 0.2 * width, 0.7 * height, 0.7 * width


def _same_crop_at(image: torch.Tensor, sizes: tuple[int, ...]) -> dict[int, torch.Tensor]:
    aug = AugmentConfig(rotation_degrees=10.0, hflip=0.0, brightness=0, contrast=0, saturation=0, hue=0)
    out = {}
    for size in sizes:
        transform = _FixedCrop(96, aug, mean=(0, 0, 0), std=(1 / 255,) * 3, interpolation="bicubic")
        random.seed(3)
        out[size] = transform(F.resize(image, size, antialias=True))  # the shards' build: shorter side = size
    return out


def test_train_crop_is_the_same_from_shards_of_any_size():
    """Shards built at --size 320 (the default), 640 or 183 px must give the recipe the same crops.

    A zone plate holds every frequency: from a larger image the warp must antialias as the smaller
    copy's resize did (without the pre-shrink: 53 and 29 grey levels off for 640 and 320 px vs 16-18).
    """
    yy, xx = torch.meshgrid(torch.arange(640.0), torch.arange(640.0), indexing="ij")
    phase = math.pi * ((xx - 320) ** 2 + (yy - 320) ** 2) / 1280
    zone = ((torch.cos(phase) + 1) * 127.5).round().to(torch.uint8).expand(3, 640, 640).contiguous()
    crops = _same_crop_at(zone, (640, 320, 183))
    for size in (640, 320):
        assert (crops[size] - crops[183]).abs().mean() < 25, size
    photo = read_image(str(Path(__file__).parent / "data" / "imagenet" / "banana.jpg"))
    crops = _same_crop_at(photo, (256, 183))
    assert (crops[256] - crops[183]).abs().mean() < 4


@pytest.mark.slow  # ~5 min on 2 loaded cores: 15 processes, each importing torch
def test_benchmark_scale_rehearsal_runs_every_stage_on_a_tiny_catalogue(tmp_path):
    """The 12,000-SKU rehearsal's script, at 20 and 40 SKUs: every stage runs and is timed, P=1 = P=4."""
    from skuvision.data.synthetic import write_catalogue

    write_catalogue(tmp_path / "originals", 42, 10, size=48, progress=False)
    result = run_cli(
        "scripts/benchmark_scale.py",
        *("--rehearsal", "--skus", "20,40", "--workers", "1", "--json", "--no-markdown"),
        *("--originals", str(tmp_path / "originals"), "--data-dir", str(tmp_path / "runs")),
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    res = json.loads(result.stdout)
    assert [r["skus"] for r in res["sizes"]] == [20, 40] and [r["new_skus"] for r in res["sizes"]] == [1, 2]
    for r in res["sizes"]:
        assert len(r["stages"]) == 10 and all(s["s"] > 0 and s["rss_mb"] > 0 for s in r["stages"].values())
        assert r["metrics"]["onboard"]["onboard/new_skus"] == r["new_skus"]
