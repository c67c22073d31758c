"""A new training run that starts from another run's weights (``init_from``): the periodic full retrain.

Not a resume (``ckpt_path``): the optimiser, schedule and epoch count start afresh, and the catalogue
may have grown since the checkpoint was written (an onboarded checkpoint is the usual source). Rows
of the SKU layer and of the brand/category heads are matched by SKU id and by name, not by index, so
a class keeps what it learned wherever it sits now; classes the checkpoint never saw keep their fresh
initialisation. Every other tensor must match by name and shape: a different backbone or head is a
different model, refused with one line rather than half loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from skuvision.data.labels import LabelMap
from skuvision.errors import ConfigError
from skuvision.model.module import SKUClassifier

INIT_FROM_HINT = "pass a .ckpt of train.py or onboard.py"


def check_path(path: str, key: str = "init_from", error: type[Exception] = ConfigError, hint: str = INIT_FROM_HINT):
    """Before the run spends minutes on data: a missing file is one line at once."""
    if not Path(path).is_file():
        raise error(f"{key}={path}: file not found; {hint}")


def read_checkpoint(
    path: str, key: str = "init_from", error: type[Exception] = ConfigError, hint: str = INIT_FROM_HINT
) -> dict:
    """A checkpoint of train.py or onboard.py (weights, hyperparameters, label map), or one line naming
    ``key`` and the file; ``init_from`` and ``onboard.from`` both read theirs here."""
    check_path(path, key, error, hint)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling / zip errors differ between torch versions
        raise error(f"{key}={path}: not a readable checkpoint ({type(exc).__name__}); {hint}") from None
    if not isinstance(ckpt, dict) or not all(ckpt.get(k) for k in ("state_dict", "hyper_parameters", "label_map")):
        raise error(f"{key}={path}: no state_dict, hyper_parameters or label_map; {hint}")
    return ckpt


def _row_layers(model: SKUClassifier, ckpt: dict) -> dict[str, tuple[list[str], list[str]]]:
    """State key -> (vocabulary now, the checkpoint's): the layers whose rows are classes, brands, categories."""
    now, then = LabelMap.from_dict(model.label_map), LabelMap.from_dict(ckpt["label_map"])
    last = len(model.head) - 1
    layers = {f"head.{last}": (now.skus, then.skus)}
    for kind in model.aux:
        layers[f"aux.{kind}"] = (now.attribute_vocab(kind), then.attribute_vocab(kind))
    return {f"{layer}.{p}": vocab for layer, vocab in layers.items() for p in ("weight", "bias")}


def _copy_rows(target: torch.Tensor, source: torch.Tensor, now: list[str], then: list[str]) -> int:
    where = {name: i for i, name in enumerate(then)}
    pairs = [(i, where[name]) for i, name in enumerate(now) if name in where]
    if pairs and target.shape[1:] == source.shape[1:]:
        rows_now, rows_then = (torch.tensor(side) for side in zip(*pairs))
        target[rows_now] = source[rows_then].to(target.dtype)
        return len(pairs)
    return 0


def warm_start(model: SKUClassifier, path: str) -> dict[str, int]:
    """Load ``path``'s weights into ``model`` in place; returns what was carried over (tensors, SKU rows, new SKUs)."""
    ckpt = read_checkpoint(path)
    theirs, own = ckpt["state_dict"], model.state_dict()
    rows = _row_layers(model, ckpt)
    extra_head = [k for k in theirs if k.startswith("head.") and k not in own]  # e.g. an onboarded projection
    for key in extra_head[:1] + list(own):
        if key in rows:
            continue
        if key in extra_head or key not in theirs or theirs[key].shape != own[key].shape:
            hp = ckpt.get("hyper_parameters", {})
            raise ConfigError(
                f"init_from={path}: its model differs from this run's at {key} (checkpoint: backbone "
                f"{hp.get('backbone')}, head {hp.get('head')}); set model.backbone/model.head to the checkpoint's"
            )
    with torch.no_grad():
        carried = {k: v for k, v in theirs.items() if k in own and k not in rows}
        model.load_state_dict(carried, strict=False)
        copied = {k: _copy_rows(own[k], theirs[k], *vocab) for k, vocab in rows.items() if k in theirs}
    sku_key = next(iter(rows))
    skus_now = len(rows[sku_key][0])
    return {
        "tensors": len(carried),
        "skus_carried": copied.get(sku_key, 0),
        "skus_new": skus_now - copied.get(sku_key, 0),
    }
