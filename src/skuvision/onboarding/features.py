"""Frozen features: everything of the trained model up to its last linear layer.

Onboarding keeps the backbone and the head's hidden layers exactly as trained, so an image's
feature never changes after the month it was computed in; only the last layer (one row per
SKU) grows. That is why one forward pass per image (or per augmented copy) is all the backbone
work a month costs, and why the head can then be trained or solved on a feature cache.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class FeatureCache:
    """Features and labels of the images pushed through the trunk; counts them (the onboarding cost)."""

    def __init__(self, trunk: nn.Module, batch_size: int = 64, device: str | torch.device = "cpu"):
        self.trunk, self.batch_size, self.device = trunk.to(device), batch_size, device
        self.backbone_images = 0

    @torch.no_grad()
    def extract(
        self, samples: Iterable[tuple[torch.Tensor, int]], transform, copies: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [n * copies, d], labels [n * copies]); ``transform`` maps a uint8 CHW image to the input
        (a random one gives ``copies`` different augmented copies of each image)."""
        feats, labels, batch, batch_labels = [], [], [], []

        def flush() -> None:
            x = torch.stack(batch).to(self.device)
            feats.append(self.trunk(x).float().cpu())
            labels.append(torch.tensor(batch_labels, dtype=torch.long))
            self.backbone_images += len(batch)
            batch.clear()
            batch_labels.clear()

        for image, label in samples:
            for _ in range(copies):
                batch.append(transform(image))
                batch_labels.append(label)
                if len(batch) == self.batch_size:
                    flush()
        if batch:
            flush()
        if not feats:
            return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        return torch.cat(feats), torch.cat(labels)
