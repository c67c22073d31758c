"""Train/eval transforms on decoded uint8 tensors (torchvision.transforms.v2).

Shards hold JPEGs already downscaled to a short side of ~320, so decoding is
cheap and the train crop works on a small tensor. Products are photographed at
any angle and under store lighting, hence rotation and colour jitter; scale
jitter stands in for distance to the camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class AugmentConfig:
    scale_min: float = 0.35
    rotation_degrees: float = 15.0
    hflip: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.2
    hue: float = 0.02


def train_transform(image_size: int, aug: AugmentConfig | None = None) -> v2.Compose:
    aug = aug or AugmentConfig()
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=(aug.scale_min, 1.0), antialias=True),
        v2.RandomRotation(aug.rotation_degrees),
        v2.RandomHorizontalFlip(aug.hflip),
        v2.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(image_size: int, crop_fraction: float = 0.875) -> v2.Compose:
    return v2.Compose([
        v2.Resize(int(round(image_size / crop_fraction)), antialias=True),
        v2.CenterCrop(image_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
