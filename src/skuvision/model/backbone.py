"""A timm CNN cut into stages that can be frozen from the input side.

Freeze depth counts stages from the input: 0 none, 1 stem, 2 +layer1, 3 +layer2,
4 +layer3, 5 the whole backbone (ResNet naming; any timm CNN with
``feature_info`` works: a stage ends at each ``feature_info`` module, so for
EfficientNet-Lite0 stage 1 is the stem + blocks.0, then blocks.1, blocks.2,
blocks.3-4, and blocks.5-6 + conv_head). The frozen prefix runs under ``torch.no_grad()`` — no
activations are kept for backward, which is most of the memory and a third of
the compute saved — and its BatchNorm layers stay in eval mode so their running
statistics, learned on millions of images, never drift on ours.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from torch import nn

from skuvision.errors import ConfigError
from skuvision.model.pretrained import has_embedded_weights, load_embedded_weights
from skuvision.model.speed import FROZEN_PRECISIONS, fold_batchnorm, frozen_autocast


def _load_state_dict(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"model.pretrained_file={path}: file not found; pass a local .safetensors or .pth file")
    if p.suffix == ".safetensors":
        state = load_file(str(p))
    else:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
    return state


def create_timm_model(
    name: str, pretrained: bool = False, pretrained_file: str | None = None, num_classes: int = 0
) -> nn.Module:
    """A timm model, by default without classifier (``num_classes=0``).

    Weights: ``pretrained_file`` if given; else, with ``pretrained``, the embedded ImageNet weights
    for the backbones that have them (EfficientNet-Lite0, no network: ``skuvision.model.pretrained``),
    else timm's own (the Hugging Face hub cache; ``HF_HUB_OFFLINE=1`` offline). Tests never download.
    """
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ConfigError(f"model.backbone={name}: not a timm model{hint}; see timm.list_models()")
    embedded = bool(pretrained and not pretrained_file and has_embedded_weights(name))
    from_hub = bool(pretrained and not pretrained_file and not embedded)
    try:
        model = timm.create_model(name, pretrained=from_hub, num_classes=num_classes)
    except (OSError, RuntimeError) as exc:  # huggingface_hub's offline/not-cached errors are OSErrors
        if not from_hub:
            raise
        raise ConfigError(
            f"model.pretrained=true: no ImageNet weights for {name} in the local hub cache and no network "
            f"({type(exc).__name__}); use model.backbone=efficientnet_lite0 (weights embedded), "
            "model.pretrained_file=PATH, or model.pretrained=false"
        ) from None
    if embedded:
        load_embedded_weights(model, name)
    if pretrained_file:
        state = _load_state_dict(pretrained_file)
        state = {k.removeprefix("backbone.model."): v for k, v in state.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(("fc.", "classifier.", "head."))]
        if missing:
            raise ConfigError(
                f"model.pretrained_file={pretrained_file}: {len(missing)} backbone weights missing (e.g. {missing[0]}); is it for {name}?"
            )
    return model


def _stage_units(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """Top-level (or nested, where feature modules are nested) units in forward order, each with its stage 1..S."""
    feature_modules = [info["module"] for info in model.feature_info]
    units: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if any(f.startswith(full + ".") for f in feature_modules):
                walk(full + ".", child)
            else:
                units.append((full, child))

    walk("", model)
    head_names = {"global_pool", "fc", "classifier", "head", "head_drop", "fc_norm", "flatten"}
    staged, stage = [], 1
    for full, child in units:
        if full in head_names:
            continue
        staged.append((full, child, min(stage, len(feature_modules))))
        if stage <= len(feature_modules) and full == feature_modules[stage - 1]:
            stage += 1
    return staged


class StagedBackbone(nn.Module):
    """Runs a timm CNN unit by unit so a frozen prefix can skip autograd."""

    def __init__(
        self,
        model: nn.Module,
        freeze_depth: int,
        channels_last: bool = False,
        frozen_precision: str = "fp32",
        fold_frozen_bn: bool = False,
    ):
        super().__init__()

        if frozen_precision not in FROZEN_PRECISIONS:
            raise ConfigError(f"model.frozen_precision={frozen_precision}: use one of {', '.join(FROZEN_PRECISIONS)}")
        self.model = model
        self.channels_last = bool(channels_last)
        self.frozen_precision = frozen_precision
        units = _stage_units(model)
        self.num_stages = len(model.feature_info)
        if not 0 <= freeze_depth <= self.num_stages:
            raise ConfigError(
                f"model.freeze_depth={freeze_depth}: must be 0..{self.num_stages} "
                f"(0 trains everything, {self.num_stages} freezes the whole backbone)"
            )
        self.freeze_depth = freeze_depth
        self.unit_names = [n for n, _, _ in units]
        self.unit_stages = [s for _, _, s in units]
        self._units = [m for _, m, _ in units]  # plain list: modules are registered under self.model
        self.num_features = model.num_features
        for unit, stage in zip(self._units, self.unit_stages):
            unit.requires_grad_(stage > freeze_depth)
        self.train()
        if fold_frozen_bn:
            self.fold_frozen_batchnorm()
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def fold_frozen_batchnorm(self) -> int:
        """Fold the frozen prefix's BatchNorm into its convolutions; refuse if the prefix's output changes."""
        probe = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        want = self._frozen_forward(probe, "fp32")
        folded = fold_batchnorm(self.model, {id(m) for unit in self.frozen_units for m in unit.modules()})
        self._units = [self.model.get_submodule(name) for name in self.unit_names]  # folded units were replaced
        got = self._frozen_forward(probe, "fp32")
        if not torch.allclose(want, got, rtol=1e-3, atol=1e-4):
            raise ConfigError(
                f"model.fold_frozen_bn=true changed the frozen prefix's output (max diff "
                f"{(want - got).abs().max().item():.1e}) for this backbone; set it to false"
            )
        return folded

    @property
    def frozen_units(self) -> list[nn.Module]:
        return [u for u, s in zip(self._units, self.unit_stages) if s <= self.freeze_depth]

    def train(self, mode: bool = True) -> StagedBackbone:
        super().train(mode)
        for unit in self.frozen_units:  # frozen BatchNorm keeps its running stats, always
            unit.eval()
        return self

    def stage_parameters(self) -> list[tuple[str, int, bool]]:
        """(stage name, parameter count, trainable) per stage: 'stage1 (conv1, bn1, act1)'."""
        rows = []
        for stage in range(1, self.num_stages + 1):
            names = [n for n, s in zip(self.unit_names, self.unit_stages) if s == stage]
            count = sum(p.numel() for u, s in zip(self._units, self.unit_stages) if s == stage for p in u.parameters())
            rows.append((f"stage{stage} ({', '.join(names)})", count, stage > self.freeze_depth))
        return rows

    def _frozen_forward(self, x: torch.Tensor, precision: str | None = None) -> torch.Tensor:
        with torch.no_grad(), frozen_autocast(x.device, precision or self.frozen_precision):
            for unit in self.frozen_units:
                x = unit(x)
        return x.float()

    @property
    def trainable_units(self) -> list[nn.Module]:
        return [u for u, s in zip(self._units, self.unit_stages) if s > self.freeze_depth]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self._frozen_forward(x)
        for unit in self.trainable_units:
            x = unit(x)
        return self.model.forward_head(x, pre_logits=True)


def build_backbone(
    name: str, freeze_depth: int, pretrained: bool = False, pretrained_file: str | None = None, **speed
) -> StagedBackbone:
    """``speed``: channels_last, frozen_precision, fold_frozen_bn (see :mod:`skuvision.model.speed`)."""
    model = create_timm_model(name, pretrained, pretrained_file)
    if not hasattr(model, "feature_info") or not model.feature_info:
        raise ConfigError(f"model.backbone={name}: has no feature_info stages; pick a timm CNN such as resnet50")
    return StagedBackbone(model, freeze_depth, **speed)


def check_backbone(name: str, freeze_depth: int) -> int:
    """The checks :func:`build_backbone` makes (a timm name, the freeze-depth range), without weights or memory.

    Built on the meta device, so config validation (and the SageMaker launcher, before it submits
    a job) rejects exactly what training would, from the same code. Returns the number of stages.
    """
    with torch.device("meta"):
        model = create_timm_model(name)
    return StagedBackbone(model, freeze_depth).num_stages
