"""Speed paths for the frozen-prefix classifier, each a config key that leaves the answers as eager fp32 gives them.

- ``channels_last``: NHWC tensors; cuDNN's tensor-core convolutions and oneDNN's on CPU prefer it
  (timm's ResNet152 AMP benchmark: 370 -> 501 img/s on an RTX 3090).
- ``frozen_precision=bf16``: the frozen prefix needs no backward, so it can run under bf16
  autocast with no loss scaling and no master weights; its output is cast back to fp32 for the
  trainable stages. With freeze_depth=4 this is ~93 % of ResNet152's forward FLOPs.
- ``fold_frozen_bn``: frozen BatchNorm in eval mode is a constant per-channel affine map, so it
  folds into the convolution before it (one kernel and one memory pass fewer per pair).
- ``compile``: ``torch.compile`` of the trainable part only (units after the frozen prefix and
  the heads), where backward runs; ``Module.compile`` keeps parameter names, so checkpoints of
  compiled and eager runs are interchangeable.

Tolerances (tests/test_speed.py, CPU): channels_last, folding and compile match eager within
1e-4 relative; bf16 within bf16's ~3 significant digits (the test states its bound).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)

FROZEN_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.BatchNorm2d) and module.track_running_stats and module.running_var is not None


def _after_fold(bn: nn.BatchNorm2d) -> nn.Module:
    """What stays of a BatchNorm after folding: nothing, or timm's fused activation (BatchNormAct2d)."""
    rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
    return nn.Sequential(*rest) if rest else nn.Identity()


def fold_batchnorm(root: nn.Module, within: set[int]) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d among its parent's children.

    Only pairs whose conv is one of the modules in ``within`` (ids: the frozen prefix) are folded.
    Children order is forward order in timm's CNNs (conv1, bn1, act1, conv2, bn2, ...); the caller
    checks the folded prefix against the original on a probe input, so an architecture where that
    does not hold is caught, not silently wrong. Returns the number of pairs folded.
    """
    folded = 0
    for parent in list(root.modules()):
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = parent._modules[first], parent._modules[second]
            if (
                isinstance(conv, nn.Conv2d)
                and id(conv) in within
                and _is_batchnorm(bn)
                and conv.out_channels == bn.num_features
            ):
                fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
                fused.requires_grad_(False)
                parent._modules[first] = fused
                parent._modules[second] = _after_fold(bn)
                folded += 1
    return folded


def frozen_autocast(device: torch.device, precision: str):
    """Autocast for the frozen prefix: a no-op for fp32."""
    dtype = FROZEN_PRECISIONS[precision]
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
