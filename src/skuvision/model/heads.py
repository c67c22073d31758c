"""Fully connected heads on pooled backbone features."""

from __future__ import annotations

from torch import nn

from skuvision.model.ridge import RandomProjection


def mlp_head(
    in_features: int,
    num_classes: int,
    hidden_dims: list[int] | tuple[int, ...] = (512,),
    dropout: float = 0.2,
    norm: str = "none",
    projection: dict | None = None,
) -> nn.Sequential:
    """in -> [Linear, (BatchNorm), ReLU, Dropout] * len(hidden_dims) [-> RandomProjection] -> Linear(num_classes).

    ``projection`` (dim, seed, nonlinearity) is what onboarding with ``onboard.projection`` adds.
    """
    if norm not in ("none", "batchnorm", "layernorm"):
        raise ValueError(f"model.head.norm={norm}: use none, batchnorm or layernorm")
    layers: list[nn.Module] = []
    width = in_features
    for hidden in hidden_dims:
        layers.append(nn.Linear(width, hidden))
        if norm == "batchnorm":
            layers.append(nn.BatchNorm1d(hidden))
        elif norm == "layernorm":
            layers.append(nn.LayerNorm(hidden))
        layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = hidden
    if projection and int(projection.get("dim") or 0) > 0:
        layers.append(
            RandomProjection(width, projection["dim"], projection["seed"], projection.get("nonlinearity", "relu"))
        )
        width = int(projection["dim"])
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
