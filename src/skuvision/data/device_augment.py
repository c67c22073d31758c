"""Training augmentation on the accelerator, a batch at a time (``data.augment_on_device=true``).

Why: on a GPU node the CPU cores, not the GPUs, bound the input pipeline. With the
augmentation on the device, a loader worker only decodes the shard JPEG and the
collate pads the batch to one canvas, so a worker costs about what the decode
costs. The device then does, for the whole batch in a handful of kernels, what
``TrainTransform`` does per image: random resized crop + rotation + flip as one
affine ``grid_sample``, then brightness/contrast/saturation/hue plus ImageNet
normalisation as one batched 3x3 colour matrix and a clamp.

The warp does not antialias, so shards should be stored no more than ~1.5x the
training size (the default 320 px shards for 224 px training are); the per-image
CPU path pre-shrinks larger crops instead. On a CPU-only machine keep the default
(augment in the workers): there the batch transform would run serially in the
training process.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as nnF
from torchvision.io import ImageReadMode, decode_jpeg

from skuvision.data.transforms import IMAGENET_MEAN, IMAGENET_STD, LUMA, AugmentConfig


def pad_collate(samples: list[dict]) -> dict:
    """uint8 images of any size -> one zero-padded (B, 3, Hmax, Wmax) batch plus each image's (h, w)."""
    images = [s["image"] for s in samples]
    h = max(int(i.shape[-2]) for i in images)
    w = max(int(i.shape[-1]) for i in images)
    batch = _new_batch(images[0], (len(images), 3, h, w))
    for k, img in enumerate(images):
        ih, iw = img.shape[-2:]
        batch[k, :, :ih, :iw] = img
        if ih < h:
            batch[k, :, ih:].zero_()
        if iw < w:
            batch[k, :, :ih, iw:].zero_()
    sizes = torch.tensor([[i.shape[-2], i.shape[-1]] for i in images], dtype=torch.float32)
    return {"image": batch, "sizes": sizes, "label": torch.tensor([int(s["label"]) for s in samples])}


def _new_batch(like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """In a loader worker, allocate straight in shared memory, as default_collate does: the batch
    then crosses to the training process without another copy."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    numel = math.prod(shape)
    try:
        storage = like._typed_storage()._new_shared(numel, device=like.device)
        return like.new(storage).resize_(shape)
    except AttributeError:  # pragma: no cover - a torch without the private helper
        return torch.empty(shape, dtype=like.dtype).share_memory_()


class DeviceAugment:
    """(B, 3, H, W) uint8 + sizes (B, 2) on any device -> (B, 3, S, S) float32, augmented and normalised."""

    ratio = (3.0 / 4.0, 4.0 / 3.0)

    def __init__(
        self, image_size: int, aug: AugmentConfig | None = None, mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD
    ):
        self.size = int(image_size)
        self.aug = aug or AugmentConfig()
        self.mean, self.std = tuple(mean), tuple(std)

    def crop_boxes(self, sizes: torch.Tensor) -> torch.Tensor:
        """(B, 4) = top, left, h, w; RandomResizedCrop's distribution, 10 tries per image, else the full image."""
        n, dev = sizes.shape[0], sizes.device
        hs, ws = sizes[:, 0:1], sizes[:, 1:2]
        area = hs * ws * torch.empty(n, 10, device=dev).uniform_(self.aug.scale_min, 1.0)
        logr = torch.empty(n, 10, device=dev).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]))
        w = torch.sqrt(area * torch.exp(logr)).round()
        h = torch.sqrt(area / torch.exp(logr)).round()
        ok = (w <= ws) & (h <= hs) & (w > 0) & (h > 0)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1, device=dev))
        pick = first.clamp(min=0).unsqueeze(1)
        w = torch.where(first >= 0, w.gather(1, pick).squeeze(1), ws.squeeze(1))
        h = torch.where(first >= 0, h.gather(1, pick).squeeze(1), hs.squeeze(1))
        top = torch.floor(torch.rand(n, device=dev) * (hs.squeeze(1) - h + 1))
        left = torch.floor(torch.rand(n, device=dev) * (ws.squeeze(1) - w + 1))
        return torch.stack([top, left, h, w], 1)

    def warp(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        n, _, hmax, wmax = images.shape
        dev, s = images.device, self.size
        sizes = sizes.to(dev, torch.float32)
        top, left, h, w = self.crop_boxes(sizes).unbind(1)
        deg = self.aug.rotation_degrees
        angle = -torch.deg2rad(torch.empty(n, device=dev).uniform_(-deg, deg))  # counter-clockwise, as torchvision
        flip = torch.where(torch.rand(n, device=dev) < self.aug.hflip, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        half = s / 2
        kx, ky = 2.0 / wmax, 2.0 / hmax  # input pixels -> grid_sample's normalised coordinates
        sx, sy = w / s, h / s
        theta = torch.stack(
            [
                torch.stack([kx * sx * cos * flip * half, kx * sx * sin * half, kx * (left + w / 2) - 1], 1),
                torch.stack([-ky * sy * sin * flip * half, ky * sy * cos * half, ky * (top + h / 2) - 1], 1),
            ],
            1,
        )
        grid = nnF.affine_grid(theta, [n, 3, s, s], align_corners=False)
        return nnF.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def factors(self, n: int, device) -> torch.Tensor:
        """(4, B): brightness, contrast, saturation and hue (fraction of a turn) per image, as ColorJitter samples them."""
        aug = self.aug
        lo = torch.tensor(
            [max(0.0, 1 - aug.brightness), max(0.0, 1 - aug.contrast), max(0.0, 1 - aug.saturation), -aug.hue],
            device=device,
        ).view(4, 1)
        hi = torch.tensor([1 + aug.brightness, 1 + aug.contrast, 1 + aug.saturation, aug.hue], device=device).view(4, 1)
        return lo + (hi - lo) * torch.rand(4, n, device=device)

    def colour(self, x: torch.Tensor, factors: torch.Tensor | None = None) -> torch.Tensor:
        """Batched ColorJitter + normalisation: one (B, 3, 3) matrix and offset per image, then a clamp."""
        n, dev = x.shape[0], x.device
        b, c, sat, hue = self.factors(n, dev) if factors is None else factors.to(dev)
        hue = hue * (2 * math.pi)
        luma = torch.tensor(LUMA, device=dev)
        flat = x.flatten(2)
        mean_grey = (flat[:, :, ::7].mean(2) * luma).sum(1)
        eye = torch.eye(3, device=dev)
        cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=dev) / math.sqrt(3.0)
        hc, hs = torch.cos(hue).view(n, 1, 1), torch.sin(hue).view(n, 1, 1)
        hue_m = hc * eye + (1 - hc) / 3 * torch.ones(3, 3, device=dev) + hs * cross
        sat_m = sat.view(n, 1, 1) * eye + (1 - sat).view(n, 1, 1) * luma.view(1, 1, 3).expand(n, 3, 3)
        lin = hue_m @ sat_m
        std = torch.tensor(self.std, device=dev).view(1, 3, 1)
        mean = torch.tensor(self.mean, device=dev).view(1, 3, 1)
        matrix = lin * (c * b).view(n, 1, 1) / (255.0 * std)
        offset = lin.sum(2, keepdim=True) * ((1 - c) * b * mean_grey).view(n, 1, 1) / (255.0 * std) - mean / std
        out = torch.baddbmm(offset, matrix, flat)
        return torch.maximum(torch.minimum(out, (1 - mean) / std), -mean / std).view_as(x)

    def __call__(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        return self.colour(self.warp(images, sizes))


def jpeg_collate(samples: list[dict]) -> dict:
    """``data.decode_on_device``: the still-encoded JPEG bytes of a batch, as a list, plus the labels."""
    return {"jpeg": [s["image"] for s in samples], "label": torch.tensor([int(s["label"]) for s in samples])}


def decode_batch(batch: dict, device: torch.device) -> dict:
    """JPEG bytes -> one padded uint8 batch on ``device`` (``pad_collate``'s layout), decoded there.

    On CUDA this is torchvision's batched nvJPEG decode: the loader workers only read bytes,
    for nodes whose CPUs cannot decode as fast as the GPUs train (p4d: 12 vCPUs per A100).
    On the CPU the same call decodes with libjpeg-turbo, which is what the tests exercise.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 points at TorchCodec; this call is still the batched one
        if device.type == "cuda":  # one batched nvJPEG call
            images = decode_jpeg(batch["jpeg"], mode=ImageReadMode.RGB, device=device)
        else:  # torchvision 0.19 (torch 2.4) decodes lists on CUDA only
            images = [decode_jpeg(data, mode=ImageReadMode.RGB) for data in batch["jpeg"]]
    padded = pad_collate([{"image": image, "label": 0} for image in images])
    return {"image": padded["image"], "sizes": padded["sizes"].to(device), "label": batch["label"]}
