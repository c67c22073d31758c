"""Mixup and CutMix of a training batch with its own reverse (timm's "batch" mode).

Why in the model and not in the loader: the pair of an image is another image of the same batch,
which a per-sample loader transform never sees, and the loss needs the mixing weight for every head
(the SKU head and the brand/category heads mix their targets with the same weight). Why a mirror of
the batch and not a random permutation: it is what timm's ``Mixup(mode="batch")`` does, one weight per
batch, and it needs no extra random state beyond the weight and the box. Regularisation for small
real-photo catalogues, where the SKU head fits the training split (train top-1 0.99 by epoch 8 of
``experiment=photos``) long before validation stops rising.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from skuvision.errors import ConfigError

DEFAULTS = {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "prob": 1.0, "switch_prob": 0.5}  # off


def check_mix(mix: Mapping | None) -> dict[str, float]:
    """``model.mix`` as floats with every key present; one line naming a bad key."""
    mix = dict(mix or {})
    unknown = sorted(set(mix) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"model.mix.{unknown[0]}: unknown key; expected some of {', '.join(DEFAULTS)}")
    out = dict(DEFAULTS)
    for key, value in mix.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"model.mix.{key}={value!r}: must be a number") from None
    for key in ("mixup_alpha", "cutmix_alpha"):
        if out[key] < 0 or not math.isfinite(out[key]):
            raise ConfigError(f"model.mix.{key}={out[key]}: must be >= 0 (0 turns it off)")
    for key in ("prob", "switch_prob"):
        if not 0.0 <= out[key] <= 1.0:
            raise ConfigError(f"model.mix.{key}={out[key]}: must be in [0, 1]")
    return out


class BatchMix:
    """Mixes a batch with ``images.flip(0)``; returns the mixed batch and the weight of the original.

    The caller's loss is ``lam * loss(targets) + (1 - lam) * loss(targets.flip(0))``. With CutMix the
    weight is the share of pixels left uncut after clipping the box to the image, as in the paper.
    """

    def __init__(
        self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0, switch_prob: float = 0.5
    ):
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob = float(prob), float(switch_prob)

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    @staticmethod
    def _beta(alpha: float) -> float:
        return float(torch.distributions.Beta(alpha, alpha).sample())

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, float]:
        if not self.enabled or images.shape[0] < 2 or float(torch.rand(())) >= self.prob:
            return images, 1.0
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or float(torch.rand(())) < self.switch_prob)
        if not use_cutmix:
            lam = self._beta(self.mixup_alpha)
            return images * lam + images.flip(0) * (1.0 - lam), lam
        lam = self._beta(self.cutmix_alpha)
        height, width = images.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        mixed = images.clone()
        mixed[..., top:bottom, left:right] = images.flip(0)[..., top:bottom, left:right]
        return mixed, 1.0 - (bottom - top) * (right - left) / float(height * width)
