"""Train/eval transforms on decoded uint8 tensors.

Products are photographed at any angle and under store lighting, hence rotation
and colour jitter; scale jitter stands in for distance to the camera.

Why the train transform is hand-fused instead of a ``v2.Compose``: in a data
loader worker the composed pipeline (RandomResizedCrop, RandomRotation, flip,
ColorJitter, ToDtype, Normalize) costs 6-8 ms per 224 px image, ~3.7 ms of it the
HSV round trip of the hue jitter, while decoding the 320 px shard JPEG costs
~0.5 ms -- the augmentation, not the JPEG, starved the GPU. Here the same
augmentations are two passes over the output pixels (~0.9 ms in all; figures in
BENCHMARKS.md):

1. one warp: crop box, scale, rotation and flip compose into a single affine
   map, sampled bilinearly with ``grid_sample`` straight from the decoded image
   (only the region the crop touches is converted to float). When the crop is
   shrunk by more than 1.5x, the region is first downscaled with antialiasing so
   the warp never aliases;
2. one colour matrix: brightness, contrast, saturation and hue are all linear in
   RGB (hue as a rotation about the grey axis, the linear counterpart of the HSV
   hue shift: same direction and size within ~20%, cheaper than an HSV round
   trip by 20x), and so is the ImageNet normalisation, so all five fold into one
   3x3 matrix plus an offset, followed by one clamp to the valid range.

Augmentations are sampled from the same distributions as torchvision's
(RandomResizedCrop scale/ratio, uniform angle, ColorJitter factor ranges); the
colour ops are applied in a fixed order (brightness, contrast, saturation, hue)
with one clamp at the end instead of a random order with a clamp after each.
Random numbers come from Python's ``random`` module, which DataLoader and
Lightning seed per worker.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as nnF
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from skuvision.errors import ConfigError

# Defaults for constructing a transform by hand only; the data module takes mean/std from
# preprocess_spec, i.e. from the pretrained config of the weights in use.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_CROSS = ((0, -1, 1), (1, 0, -1), (-1, 1, 0))  # cross product with the grey axis (1, 1, 1)
ANTIALIAS_ABOVE = 1.5  # input pixels per output pixel above which the region is pre-shrunk


@dataclass
class AugmentConfig:
    scale_min: float = 0.35
    rotation_degrees: float = 15.0
    hflip: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.2
    hue: float = 0.02


def colour_matrix(
    brightness: float, contrast: float, saturation: float, hue: float, mean_grey: float
) -> tuple[list[list[float]], list[float]]:
    """(3x3 matrix, offset) applying the four ColorJitter factors to RGB in 0..255, as plain floats.

    ``hue`` is a fraction of a full turn (torchvision's hue factor); ``mean_grey`` is the mean
    luma of the input, which contrast blends towards. Plain Python: a dozen tiny tensor ops
    would cost more than the 3x3 product they compute.
    """
    c, s = math.cos(2 * math.pi * hue), math.sin(2 * math.pi * hue)
    k = s / math.sqrt(3.0)
    hue_m = [[c * (i == j) + (1 - c) / 3 + k * _CROSS[i][j] for j in range(3)] for i in range(3)]  # about the grey axis
    sat = [[saturation * (i == j) + (1 - saturation) * LUMA[j] for j in range(3)] for i in range(3)]
    lin = [[sum(hue_m[i][t] * sat[t][j] for t in range(3)) for j in range(3)] for i in range(3)]
    grey = (1.0 - contrast) * brightness * mean_grey
    matrix = [[v * contrast * brightness for v in row] for row in lin]
    offset = [sum(row) * grey for row in lin]
    return matrix, offset


class TrainTransform:
    """uint8 (3, H, W) -> float32 (3, S, S): random resized crop, rotation, flip, colour jitter, normalise."""

    ratio = (3.0 / 4.0, 4.0 / 3.0)

    def __init__(
        self,
        image_size: int,
        aug: AugmentConfig | None = None,
        mean: tuple = IMAGENET_MEAN,
        std: tuple = IMAGENET_STD,
        interpolation: str = "bilinear",
    ):
        self.size = int(image_size)
        self.aug = aug or AugmentConfig()
        if interpolation not in ("bilinear", "bicubic", "nearest"):
            raise ValueError(f"interpolation={interpolation}: use bilinear, bicubic or nearest")
        self.mode = interpolation  # grid_sample's mode: the pretrained config's interpolation
        self._scale = [1.0 / (255.0 * sd) for sd in std]  # normalisation, folded into the colour matrix
        self._shift = [-m / sd for m, sd in zip(mean, std)]
        self._lo = self._shift  # normalised 0 and 255: the clamp bounds
        self._hi = [255.0 * k + b for k, b in zip(self._scale, self._shift)]
        centred = (torch.arange(self.size, dtype=torch.float32) + 0.5) * 2 / self.size - 1
        self._u = centred  # output pixel centres in grid_sample's normalised coordinates
        self._grid = torch.empty(1, self.size, self.size, 2)

    def crop_box(self, height: int, width: int) -> tuple[float, float, float, float]:
        """(top, left, h, w), sampled like torchvision's RandomResizedCrop.get_params."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * random.uniform(self.aug.scale_min, 1.0)
            aspect = math.exp(random.uniform(*log_ratio))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return float(random.randint(0, height - h)), float(random.randint(0, width - w)), float(h), float(w)
        in_ratio = width / height  # fallback: central crop within the ratio bounds
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            w, h = width, height
        return float((height - h) // 2), float((width - w) // 2), float(h), float(w)

    def warp(self, image: torch.Tensor) -> torch.Tensor:
        """The geometric half: uint8 (3, H, W) -> float (3, S*S) in 0..255."""
        height, width = image.shape[-2:]
        top, left, h, w = self.crop_box(height, width)
        size = self.size
        sx, sy = w / size, h / size
        # counter-clockwise for positive angles, like torchvision's rotate
        angle = -math.radians(random.uniform(-self.aug.rotation_degrees, self.aug.rotation_degrees))
        flip = -1.0 if random.random() < self.aug.hflip else 1.0
        cos, sin = math.cos(angle), math.sin(angle)
        # output pixel (centred) -> input pixel: scale(sx, sy) . rotate(-angle) . flip
        a = [[sx * cos * flip, sx * sin], [-sy * sin * flip, sy * cos]]
        cx, cy = left + w / 2, top + h / 2
        ex = (abs(a[0][0]) + abs(a[0][1])) * size / 2  # half extent of the sampled region
        ey = (abs(a[1][0]) + abs(a[1][1])) * size / 2
        x0, x1 = max(0, math.floor(cx - ex) - 1), min(width, math.ceil(cx + ex) + 1)
        y0, y1 = max(0, math.floor(cy - ey) - 1), min(height, math.ceil(cy + ey) + 1)
        region = image[:, y0:y1, x0:x1]
        rh, rw = y1 - y0, x1 - x0
        fx = fy = 1.0
        shrink = min(sx, sy)
        if shrink > ANTIALIAS_ABOVE:  # would alias: shrink the region first, with antialiasing
            nh, nw = max(1, round(rh / shrink)), max(1, round(rw / shrink))
            region = F.resize(region, [nh, nw], antialias=True)
            fx, fy, rh, rw = nw / rw, nh / rh, nh, nw
        # output pixel centre u (normalised, -1..1) -> input pixel -> grid_sample's normalised input
        # coordinates (align_corners=False: xn = 2 x / W - 1); an outer sum, cheaper than affine_grid
        kx, ky, half = 2.0 * fx / rw, 2.0 * fy / rh, size / 2
        u, grid = self._u, self._grid
        torch.add(
            (u * (kx * a[0][0] * half) + (kx * (cx - x0) - 1.0)).view(1, size),
            (u * (kx * a[0][1] * half)).view(size, 1),
            out=grid[0, :, :, 0],
        )
        torch.add(
            (u * (ky * a[1][0] * half) + (ky * (cy - y0) - 1.0)).view(1, size),
            (u * (ky * a[1][1] * half)).view(size, 1),
            out=grid[0, :, :, 1],
        )
        out = nnF.grid_sample(
            region.unsqueeze(0).float(), grid, mode=self.mode, padding_mode="zeros", align_corners=False
        )
        return out.view(3, size * size)

    def colour(self, pixels: torch.Tensor) -> torch.Tensor:
        """The photometric half plus normalisation: float (3, N) in 0..255 -> normalised float (3, N)."""
        aug = self.aug
        means = pixels[:, ::7].mean(1).tolist()  # every 7th pixel: contrast needs the mean, not its last digit
        mean_grey = sum(wt * m for wt, m in zip(LUMA, means))
        matrix, offset = colour_matrix(
            random.uniform(max(0.0, 1 - aug.brightness), 1 + aug.brightness),
            random.uniform(max(0.0, 1 - aug.contrast), 1 + aug.contrast),
            random.uniform(max(0.0, 1 - aug.saturation), 1 + aug.saturation),
            random.uniform(-aug.hue, aug.hue),
            mean_grey,
        )
        matrix = torch.tensor([[k * v for v in row] for k, row in zip(self._scale, matrix)])
        offset = torch.tensor([[k * o + b] for k, o, b in zip(self._scale, offset, self._shift)])
        out = torch.addmm(offset, matrix, pixels)
        for c in range(3):  # one clamp per channel: scalar bounds vectorise, a (3, 1) bound tensor does not
            out[c].clamp_(self._lo[c], self._hi[c])
        return out

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.colour(self.warp(image)).view(3, self.size, self.size)


_MODES = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}


def train_transform(image_size: int, aug: AugmentConfig | None = None, spec: dict | None = None) -> TrainTransform:
    if spec is None:
        return TrainTransform(image_size, aug)
    return TrainTransform(
        image_size,
        aug,
        mean=tuple(spec["mean"]),
        std=tuple(spec["std"]),
        interpolation=_train_mode(spec["interpolation"]),
    )


def _train_mode(interpolation: str) -> str:
    return interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"


EVAL_CROPS = (1, 3, 5)  # the eval-time views: the centre; + both ends of the long side; + the four corners


def check_eval_crops(crops: int, key: str) -> int:
    """``crops`` if it is a view count :func:`crop_boxes` knows, else one line naming ``key``."""
    if crops not in EVAL_CROPS:
        raise ConfigError(
            f"{key}={crops}: use 1 (the centre crop), 3 (+ both ends of the long side) or 5 (+ the corners)"
        )
    return crops


def crop_boxes(height: int, width: int, size: int, crops: int) -> list[tuple[int, int]]:
    """(top, left) of each ``size`` px view: the centre first, then the long side's ends (3) or the
    corners (5). Never a mirror: packaging text is not symmetric."""
    centre = (int(round((height - size) / 2.0)), int(round((width - size) / 2.0)))  # as v2.CenterCrop
    if crops == 1:
        return [centre]
    if crops == 3:
        if width >= height:
            return [centre, (centre[0], 0), (centre[0], width - size)]
        return [centre, (0, centre[1]), (height - size, centre[1])]
    if crops == 5:
        return [centre, (0, 0), (0, width - size), (height - size, 0), (height - size, width - size)]
    raise ValueError(f"crops={crops}: use one of {EVAL_CROPS}")


class MultiCrop(torch.nn.Module):
    """(3, H, W) -> (crops, 3, size, size): the views of :func:`crop_boxes`, stacked; the model averages
    their softmax (``SKUClassifier`` and ``skuvision evaluate`` take a view axis after the batch)."""

    def __init__(self, size: int, crops: int) -> None:
        super().__init__()
        check_eval_crops(crops, "crops")  # a bad count fails here, before any image
        self.size, self.crops = size, crops

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        return torch.stack(
            [
                F.crop(image, top, left, self.size, self.size)
                for top, left in crop_boxes(height, width, self.size, self.crops)
            ]
        )


def eval_transform(spec: dict, crops: int = 1) -> v2.Compose:
    """Shorter side to ``spec['resize']``, centre crop, scale, normalise: exactly ``preprocess_spec``.

    ``crops`` 3 or 5: the same resize, then that many ``spec['crop']`` px views (centre first) stacked
    as (crops, 3, S, S); the centre view is the one-crop image, bit for bit.
    """
    crop = v2.CenterCrop(int(spec["crop"])) if crops == 1 else MultiCrop(int(spec["crop"]), crops)
    return v2.Compose(
        [
            v2.Resize(
                int(spec["resize"]),
                interpolation=_MODES.get(spec["interpolation"], v2.InterpolationMode.BILINEAR),
                antialias=True,
            ),
            crop,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(spec["mean"]), list(spec["std"])),
        ]
    )
