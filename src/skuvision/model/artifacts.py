"""The model artifacts ``model.ckpt`` + ``label_map.json`` that a SageMaker job's model.tar.gz and a W&B
``model`` artifact both carry; one writer, so the two always agree on the label map (the checkpoint's own).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from skuvision.errors import DataError
from skuvision.files import write_json


def write_model_artifacts(checkpoint: str | Path, out_dir: str | Path, copy_checkpoint: bool = True) -> dict[str, Path]:
    """``{"model.ckpt": path, "label_map.json": path}`` in ``out_dir``.

    ``copy_checkpoint=False`` leaves the checkpoint where it is (a W&B upload names it model.ckpt
    itself) and writes only label_map.json.
    """
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if not checkpoint.is_file():
        raise DataError(f"{checkpoint}: no such checkpoint; no model artifacts to write")
    label_map = torch.load(checkpoint, map_location="cpu", weights_only=True).get("label_map")
    if not label_map:
        raise DataError(f"{checkpoint}: holds no label map; was it written by skuvision's SKUClassifier?")
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts = {
        "model.ckpt": checkpoint,
        "label_map.json": write_json(out_dir / "label_map.json", label_map, sort_keys=True),
    }
    if copy_checkpoint:
        shutil.copyfile(checkpoint, out_dir / "model.ckpt")
        artifacts["model.ckpt"] = out_dir / "model.ckpt"
    return artifacts
