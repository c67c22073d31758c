"""Growing the SKU layer, and the two ways of filling the new rows: closed form and fine-tuning.

The grown layer starts as a copy of the old one (every old row bit-identical: an old SKU's
score for an image is exactly what it was) plus one row per new SKU from its mean feature,
scaled like the old rows (SimpleCIL, Zhou et al. 2024). From there:

* ``closed_form`` ``mean``: no backprop. Old rows stay bit-identical; the new rows' common
  scale and bias are the one choice left, and a trained layer's rows do not share the
  prototypes' scale, so both are picked on the training features (new images + replay) by a
  small grid search: keep the replayed old images' top-1 first, then the best leave-one-out
  new-SKU top-1.
* ``closed_form`` ``ridge``: a ridge-regression layer on the features (RanPAC's closed-form
  head, optionally on its random projection), solved from running sums kept in the checkpoint
  (``skuvision.model.ridge``). Next month only adds the new images' terms, and the solution
  equals the one from all months' images at once.
* ``finetune``: the grown layer trained by gradient descent on cached features of a few
  augmented copies of each image; by default only the new rows move, so old-vs-old decisions cannot change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def grow_linear(old: nn.Linear, new_rows: int) -> nn.Linear:
    """A copy of ``old`` with ``new_rows`` more outputs; rows 0..K-1 are bit-identical copies."""
    grown = nn.Linear(old.in_features, old.out_features + new_rows, dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        grown.weight[: old.out_features].copy_(old.weight)
        grown.bias[: old.out_features].copy_(old.bias)
    return grown


def class_means(features: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Mean feature of each class in ``classes`` (rows in that order)."""
    return torch.stack([features[labels == c].mean(0) for c in classes])


def init_new_rows(layer: nn.Linear, old_count: int, means: torch.Tensor) -> None:
    """New rows = unit mean directions x the old rows' median norm; biases = the old biases' median."""
    with torch.no_grad():
        scale = layer.weight[:old_count].norm(dim=1).median()
        layer.weight[old_count:] = F.normalize(means.to(layer.weight), dim=1) * scale
        layer.bias[old_count:] = layer.bias[:old_count].median()


def _leave_one_out_scores(
    features: torch.Tensor, labels: torch.Tensor, directions: torch.Tensor, old_count: int
) -> torch.Tensor:
    """features @ directions^T, except that a new image's own class uses the mean of its class without it.

    Without this, every new image is scored against a mean it is part of, and the new rows look
    better on the training images than they will on test images.
    """
    scores = features @ directions.T
    for j in range(directions.shape[0]):
        mask = labels == old_count + j
        n = int(mask.sum())
        if n > 1:
            total = features[mask].sum(0, keepdim=True)
            loo = F.normalize((total - features[mask]) / (n - 1), dim=1)
            scores[mask, j] = (features[mask] * loo).sum(1)
    return scores


@torch.no_grad()
def calibrate_new_rows(
    layer: nn.Linear, old_count: int, features: torch.Tensor, labels: torch.Tensor, tolerance: float = 0.0
) -> dict:
    """One gain and one bias offset for the new rows (old rows untouched), picked on training features.

    The pick keeps the replayed old images' top-1 within ``tolerance`` of the old model's (nothing
    forgotten comes first), and among those settings takes the best leave-one-out new-SKU top-1.
    """
    w_new, b_new = layer.weight[old_count:].clone(), layer.bias[old_count:].clone()
    scale = w_new.norm(dim=1, keepdim=True).mean()
    old_logits = features @ layer.weight[:old_count].T + layer.bias[:old_count]
    base = _leave_one_out_scores(features, labels, F.normalize(w_new, dim=1), old_count) * scale
    old, new = labels < old_count, labels >= old_count
    old_ref = float((old_logits[old].argmax(1) == labels[old]).float().mean()) if old.any() else 1.0
    spread = float(old_logits.std()) or 1.0
    best = (-1.0, -1.0, 1.0, 0.0)  # (old kept, new top-1, gain, offset)
    for gain in (0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 3.0):
        for offset in torch.linspace(-3.0, 2.0, 21).tolist():
            pred = torch.cat([old_logits, gain * base + b_new + offset * spread], 1).argmax(1)
            hit = (pred == labels).float()
            kept = min(float(hit[old].mean()) if old.any() else 1.0, old_ref - tolerance)
            score = (kept, float(hit[new].mean()) if new.any() else 0.0)
            if score > best[:2]:  # ties keep the earlier (milder) setting
                best = (*score, gain, offset * spread)
    layer.weight[old_count:] = w_new * best[2]
    layer.bias[old_count:] = b_new + best[3]
    return {"replay_top1_old": best[0], "loo_top1_new": best[1], "gain": best[2], "bias_offset": best[3]}


def finetune_rows(
    layer: nn.Linear,
    old_count: int,
    features: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 30,
    lr: float = 0.01,
    batch_size: int = 256,
    weight_decay: float = 1e-4,
    train_old_rows: bool = False,
    seed: int = 0,
) -> dict:
    """Cross-entropy on cached features; without ``train_old_rows`` the old rows' gradients are zeroed."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
    old_w, old_b = layer.weight[:old_count].detach().clone(), layer.bias[:old_count].detach().clone()
    steps = 0
    for _ in range(epochs):
        order = torch.randperm(len(features), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(layer(features[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if not train_old_rows:
                layer.weight.grad[:old_count] = 0
                layer.bias.grad[:old_count] = 0
            optimizer.step()
            steps += 1
            if not train_old_rows:  # AdamW's decoupled weight decay would still shrink them
                with torch.no_grad():
                    layer.weight[:old_count] = old_w
                    layer.bias[:old_count] = old_b
    return {"steps": steps, "final_loss": float(loss.detach())}
