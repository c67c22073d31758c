"""The closed-form SKU layer on a trained model's frozen features: RanPAC's random projection and ridge sums.

The trunk is everything up to the last linear layer (backbone + the head's hidden layers, and
the projection when there is one). A ridge layer on its features is solved from two running
sums, G = sum h h^T and C = sum h y^T: sums add, so the sums of every image seen so far give
the joint solution whichever month each image arrived in.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

NONLINEARITIES = ("relu", "none")


class RandomProjection(nn.Module):
    """RanPAC's fixed random expansion h = act(f W), W ~ N(0, 1) drawn from ``seed``, never trained.

    W is a buffer saved with the weights (the checkpoint and the ONNX graph carry it), and the seed
    and size go into the head's hyper-parameters so the layer is rebuilt the same everywhere.
    """

    def __init__(self, in_features: int, dim: int, seed: int, nonlinearity: str = "relu"):
        super().__init__()
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"projection nonlinearity={nonlinearity}: use {' or '.join(NONLINEARITIES)}")
        generator = torch.Generator().manual_seed(int(seed))
        self.register_buffer("weight", torch.randn(in_features, int(dim), generator=generator))
        self.dim, self.seed, self.nonlinearity = int(dim), int(seed), nonlinearity

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        projected = features @ self.weight.to(features.dtype)
        return F.relu(projected) if self.nonlinearity == "relu" else projected

    def spec(self) -> dict:
        return {"dim": self.dim, "seed": self.seed, "nonlinearity": self.nonlinearity}


def projection_spec(model) -> dict | None:
    """The projection inside the model's head (dim, seed, nonlinearity), or None."""
    found = [m for m in model.head if isinstance(m, RandomProjection)]
    return found[0].spec() if found else None


def split_model(model) -> tuple[nn.Module, nn.Linear]:
    """(trunk: backbone + hidden head layers (+ projection), in eval mode; the final SKU layer)."""
    trunk = nn.Sequential(model.backbone, *list(model.head)[:-1]).eval()
    last = model.head[-1]
    if not isinstance(last, nn.Linear):  # pragma: no cover - mlp_head always ends in Linear
        raise TypeError("the model's head does not end in a Linear layer")
    return trunk, last


class RidgeStats:
    """Running sums for a ridge layer on features h (with a constant 1 for the bias), in float64."""

    def __init__(self, dim: int, num_classes: int = 0, projection: dict | None = None):
        self.gram = torch.zeros(dim + 1, dim + 1, dtype=torch.float64)
        self.cross = torch.zeros(dim + 1, num_classes, dtype=torch.float64)
        self.count = 0
        self.projection = projection  # the features' space: which projection (None: the trunk's own)

    def add(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        """Add images' terms; the class dimension grows to ``num_classes`` (new SKUs' columns start at 0)."""
        if num_classes > self.cross.shape[1]:
            self.cross = torch.cat(
                [self.cross, self.cross.new_zeros(self.cross.shape[0], num_classes - self.cross.shape[1])], 1
            )
        f = torch.cat([features.double(), features.new_ones(len(features), 1).double()], 1)
        self.gram += f.T @ f
        # C[:, y] += h for each image: O(images x dim); a one-hot matmul was images x classes of float64
        # (484 MB for one 12,000-SKU month's new images, and O(images x classes) work per training batch)
        self.cross.index_add_(1, labels.to(self.cross.device).long(), f.T)
        self.count += len(features)

    def solve(self, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [K, d], bias [K]) minimising ||F W - Y||^2 + ridge ||W||^2."""
        eye = torch.eye(self.gram.shape[0], dtype=torch.float64)
        eye[-1, -1] = 0.0  # the bias is not shrunk
        solution = torch.linalg.solve(self.gram + ridge * eye, self.cross)
        return solution[:-1].T.float(), solution[-1].float()

    def covers(self, in_features: int, num_classes: int, projection: dict | None) -> bool:
        """True when these sums are of the features a layer of this shape and projection sees."""
        return tuple(self.cross.shape) == (in_features + 1, num_classes) and self.projection == projection

    def state(self) -> dict:
        return {"gram": self.gram, "cross": self.cross, "count": self.count, "projection": self.projection}

    @classmethod
    def from_state(cls, state: dict) -> RidgeStats:
        stats = cls(state["gram"].shape[0] - 1, projection=state.get("projection"))
        stats.gram, stats.cross, stats.count = state["gram"].double(), state["cross"].double(), int(state["count"])
        return stats


@torch.no_grad()
def split_statistics(
    trunk: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int, device, projection=None
) -> RidgeStats:
    """Ridge sums of every (images, labels) batch through ``trunk`` (fp32, eval mode), then ``projection``."""
    trunk = trunk.eval()
    stats = None
    for images, labels in batches:
        feats = trunk(images.to(device)).float()
        if projection is not None:
            feats = projection.to(device)(feats)
        if stats is None:
            stats = RidgeStats(feats.shape[1], projection=projection.spec() if projection is not None else None)
        stats.add(feats.cpu(), labels.cpu().long(), num_classes)
    return stats
