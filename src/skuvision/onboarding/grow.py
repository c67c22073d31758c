"""The old model, rebuilt with room for the new SKUs and everything it had learned copied over."""

from __future__ import annotations

import torch
from torch import nn

from skuvision.data.labels import LabelMap
from skuvision.errors import DataError
from skuvision.model.module import SKUClassifier, rebuild_classifier
from skuvision.model.warm_start import read_checkpoint
from skuvision.onboarding.heads import grow_linear


def load_checkpoint(path: str) -> dict:
    """Last month's checkpoint (``onboard.from``), or one line naming it."""
    return read_checkpoint(path, "onboard.from", DataError, "pass last month's checkpoint (a .ckpt of train.py)")


def _grow_aux(old: nn.Linear, new: nn.Linear, old_vocab: list[str], new_vocab: list[str]) -> None:
    """Copy brand/category rows by name (a new brand can sort into the middle); new names get the mean row."""
    with torch.no_grad():
        where = {name: i for i, name in enumerate(old_vocab)}
        for j, name in enumerate(new_vocab):
            if name in where:
                new.weight[j] = old.weight[where[name]]
                new.bias[j] = old.bias[where[name]]
            else:
                new.weight[j] = old.weight.mean(0)
                new.bias[j] = old.bias.mean()


def _build_checkpoint(ckpt: dict, projection: dict | None) -> tuple[dict, int, bool]:
    """(the checkpoint to rebuild from, the index of its last head layer, whether a projection is added).

    The old SKU layer is left out of the rebuild: with a projection added, the projection takes its
    index in the head, and it is refilled by ``grown_model`` anyway.
    """
    state = ckpt["state_dict"]
    last = max(int(k.split(".")[1]) for k in state if k.startswith("head."))
    hparams = dict(ckpt["hyper_parameters"])
    head = dict(hparams.get("head") or {})
    adds = bool(projection) and not head.get("projection")
    if adds:
        hparams["head"] = {**head, "projection": dict(projection)}
    kept = {k: v for k, v in state.items() if not k.startswith(f"head.{last}.")}
    return {**ckpt, "state_dict": kept, "hyper_parameters": hparams}, last, adds


def grown_model(ckpt: dict, new_map: LabelMap, projection: dict | None = None) -> tuple[SKUClassifier, int]:
    """(model for ``new_map`` with the checkpoint's weights, number of old classes); new SKU rows are zero.

    Rebuilt as ``load_classifier`` rebuilds (``rebuild_classifier``), then the SKU layer and the
    brand/category layers, the only ones whose shape changed, are extended from the checkpoint's rows.
    With ``projection`` (RanPAC) added to a model without one, the SKU layer is new (zero) and sized for
    the projection: only the ridge solver can fill it.
    """
    state = ckpt["state_dict"]
    old_count = int(ckpt["hyper_parameters"]["num_classes"])
    build, old_last, adds_projection = _build_checkpoint(ckpt, projection)
    model, unfilled = rebuild_classifier(build, num_classes=len(new_map), label_map=new_map.to_dict())
    last = len(model.head) - 1
    fresh = {f"head.{last}.weight", f"head.{last}.bias", f"head.{last - 1}.weight" if adds_projection else ""}
    stray = [k for k in unfilled if k not in fresh and not k.startswith("aux.")]
    if stray:
        raise DataError(f"checkpoint does not match its own hyper_parameters ({stray[0]}); was it edited?")
    if adds_projection:
        grown = nn.Linear(model.head[last].in_features, len(new_map))
        old_rows = None
    else:
        old_rows = nn.Linear(model.head[last].in_features, old_count)
        old_rows.load_state_dict({"weight": state[f"head.{old_last}.weight"], "bias": state[f"head.{old_last}.bias"]})
        grown = grow_linear(old_rows, len(new_map) - old_count)
    with torch.no_grad():
        start = 0 if old_rows is None else old_count
        grown.weight[start:] = 0.0
        grown.bias[start:] = 0.0
    model.head[last] = grown
    _grow_aux_heads(model, ckpt, new_map)
    model.requires_grad_(False)
    return model.eval(), old_count


def _grow_aux_heads(model, ckpt: dict, new_map: LabelMap) -> None:
    state, old_map = ckpt["state_dict"], LabelMap.from_dict(ckpt["label_map"])
    for kind, layer in model.aux.items():
        if f"aux.{kind}.weight" in state:
            w, b = state[f"aux.{kind}.weight"], state[f"aux.{kind}.bias"]
            old = nn.Linear(w.shape[1], w.shape[0])
            old.load_state_dict({"weight": w, "bias": b})
            _grow_aux(old, layer, old_map.attribute_vocab(kind), new_map.attribute_vocab(kind))
