"""What the backbone's weights expect of an image: mean/std, interpolation, eval resize and crop."""

from __future__ import annotations

import math

import timm.data
from timm.models import get_pretrained_cfg

from skuvision.errors import ConfigError

# Embedded weights were trained in TensorFlow; timm describes them under the ``tf_`` name, while the
# plain name's config describes timm's own retrained weights (other mean/std).
CONFIG_SOURCES = {f"efficientnet_lite{n}": f"tf_efficientnet_lite{n}" for n in (0, 1, 2)}


def config_source(backbone: str) -> str:
    """The timm model whose pretrained config describes the weights ``backbone`` is loaded with."""
    return CONFIG_SOURCES.get(backbone, backbone)


def preprocess_spec(backbone: str, image_size: int) -> dict:
    """How images must be prepared for ``backbone`` at ``image_size``: the one source of truth.

    Read from timm's pretrained config of the weights the backbone is loaded with (``config_source``),
    never from constants kept here, so the train transform, the eval transform and anything that
    describes preprocessing to another runtime (ONNX export's preprocess.json) cannot disagree with
    each other or with what the weights were trained on. Eval: resize the shorter side to ``resize``
    with ``interpolation``, centre-crop ``crop`` x ``crop``, scale to 0..1, subtract ``mean``,
    divide by ``std`` (RGB order). Train: a random resized crop to ``crop`` with the same
    interpolation, mean and std.
    """
    source = config_source(backbone)
    pretrained_cfg = get_pretrained_cfg(source)
    cfg = timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg else {})
    crop_pct = float(cfg["crop_pct"])
    size = int(image_size)
    return {
        "backbone": backbone,
        "config_source": source,
        "resize": int(math.floor(size / crop_pct)),
        "crop": size,
        "crop_pct": crop_pct,
        "interpolation": str(cfg["interpolation"]),
        "mean": [float(m) for m in cfg["mean"]],
        "std": [float(s) for s in cfg["std"]],
        "channel_order": "RGB",
        "scale": 1.0 / 255.0,
    }


def check_crop_pct(crop_pct: float | None, key: str) -> None:
    """None, or a share in (0, 1]; else one line naming ``key``."""
    if crop_pct is not None and not 0.0 < float(crop_pct) <= 1.0:
        raise ConfigError(f"{key}={crop_pct}: must be in (0, 1] (the crop's share of the resized shorter side)")


def with_crop_pct(spec: dict, crop_pct: float | None, key: str = "crop_pct") -> dict:
    """``spec`` with the eval resize of another ``crop_pct`` (the crop's share of the resized shorter side).

    Why a test may want its own: a model trained on random resized crops sees products larger than a
    centre crop at the weights' crop_pct shows them ("FixRes"), so a smaller crop_pct (a closer view)
    can score better; it is chosen on val (``scripts/benchmark_eval_views.py``). None: ``spec`` as it is.
    """
    if crop_pct is None:
        return spec
    check_crop_pct(crop_pct, key)
    return {**spec, "crop_pct": float(crop_pct), "resize": int(math.floor(int(spec["crop"]) / float(crop_pct)))}
