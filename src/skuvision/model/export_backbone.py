"""Export a trained backbone as ``.safetensors`` that ``model.pretrained_file`` loads back.

Why: no ImageNet weights can be downloaded offline, and a freeze-depth sweep over random weights says
nothing. ``experiment=pretrain_synthetic`` trains a backbone on one synthetic catalogue and writes it
here (config key ``export_backbone``); ``experiment=finetune_synthetic`` starts from it on a disjoint
catalogue. Keys are the timm model's own (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...), so
the file also loads with plain ``timm.create_model(name, num_classes=0).load_state_dict``. The
classifier heads are not exported: they belong to the pretraining catalogue's SKUs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from safetensors.torch import save_file

from skuvision.files import atomic_path

log = logging.getLogger(__name__)


def export_backbone(model, path: str | Path, metadata: dict | None = None) -> Path:
    """Write ``model.backbone.model``'s state (weights + BatchNorm statistics) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.backbone.model.state_dict().items()}
    info = {"format": "pt", "backbone": str(model.hparams.backbone), "num_features": str(model.backbone.num_features)}
    info.update({k: str(v) for k, v in (metadata or {}).items()})
    with atomic_path(path, mode=0o644) as tmp:  # 0644: safetensors writes 0600; the file is shared like any checkpoint
        save_file(state, str(tmp), metadata=info)
    log.info(
        "exported %s backbone (%d tensors) -> %s; fine-tune with model.pretrained_file=%s",
        info["backbone"],
        len(state),
        path,
        path,
    )
    return path
