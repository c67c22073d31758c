"""``skuvision export``: a checkpoint -> the directory a checkout counter deploys.

``model.onnx`` + ``labels.json`` + ``preprocess.json`` are all a counter needs; ``model_card.md``
says where the model came from; ``--int8`` adds ``model.int8.onnx``. Every export is checked right
away: ONNX Runtime's logits against PyTorch's on the same batch (timm's onnx_export checks its
forward pass the same way), so a broken graph never leaves the machine that made it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from skuvision.data.manifest import read_manifest
from skuvision.data.transforms import eval_transform
from skuvision.errors import UserError
from skuvision.export.card import render_card, sha256
from skuvision.export.onnx_export import export_onnx
from skuvision.export.quantize import quantize_int8, top1_agreement
from skuvision.export.runtime import EXPORT_FILES, OnnxPredictor, TorchPredictor, labels_document
from skuvision.export.shard_reader import load_batch

# Deferred on purpose: onnx/onnxruntime load only for export, predict and evaluate on an export dir.

PARITY_TOLERANCE = 1e-3  # export fails above this; the test suite holds fp32 to 1e-4
CALIBRATION_IMAGES = 256
AGREEMENT_IMAGES = 512


def preprocess_document(spec: dict) -> dict:
    """``preprocess.json``: the eval transform's spec as is, plus the model's input contract."""
    s = int(spec["crop"])
    return {
        **spec,
        "input": {
            "name": "images",
            "dtype": "float32",
            "layout": "NCHW",
            "shape": ["batch", 3, s, s],
            "value": "RGB, (pixel / 255 - mean) / std per channel",
            "steps": [
                "decode to RGB",
                f"resize the shorter side to {spec['resize']} px ({spec['interpolation']}, antialiased)",
                f"centre-crop {s}x{s}",
                "scale to 0..1",
                "subtract mean, divide by std",
            ],
        },
        "outputs": {"logits": ["batch", "classes"], "probabilities": ["batch", "classes"]},
    }


def _sample_batch(spec: dict, calibration: str | None, n: int = 8):
    """Real shard images when a shard dir is at hand, else a fixed random batch in the normalised range."""
    if calibration:
        split = _first_split(calibration, ("test", "val", "train"))
        return load_batch(calibration, split, eval_transform(spec), limit=n)[0]
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, int(spec["crop"]), int(spec["crop"]), generator=g)


def _first_split(shards_dir: str, order: tuple[str, ...]) -> str:
    splits = read_manifest(shards_dir)["splits"]
    for split in order:
        if splits.get(split, {}).get("count"):
            return split
    raise UserError(f"--calibration {shards_dir}: every split is empty; pass a shard dir with images")


def _check_out_dir(out: Path, force: bool) -> None:
    existing = [f for f in (*EXPORT_FILES, "model.int8.onnx", "model_card.md") if (out / f).exists()]
    if existing and not force:
        raise UserError(f"--out {out}: already holds {', '.join(existing)}; pass another --out or --force to overwrite")


def export_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    opset: int = 17,
    exporter: str = "auto",
    int8: bool = False,
    calibration: str | None = None,
    image_size: int | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    force: bool = False,
    run_dir: str | Path | None = None,
    int8_activations: str = "uint8",
) -> dict:
    """Write the export dir; returns the summary (also in ``export.json``).

    ``run_dir``: the training run (its ``.hydra/config.yaml`` gives the image size and the training
    data, its ``metrics.json`` the metrics) when the checkpoint does not live inside it.
    """
    import onnxruntime as ort

    if int8 and not calibration:
        raise UserError("--int8 needs --calibration SHARDS_DIR: static quantisation calibrates on real shard images")
    if calibration:
        read_manifest(calibration)  # one clear line before any work when it is not a shard dir
    out = Path(out)
    _check_out_dir(out, force)
    torch_model = TorchPredictor(Path(ckpt), image_size, run_dir)
    spec = torch_model.spec
    out.mkdir(parents=True, exist_ok=True)
    summary = export_onnx(torch_model.model, out / "model.onnx", int(spec["crop"]), opset, exporter)
    (out / "labels.json").write_text(json.dumps(labels_document(torch_model.labels), indent=1))
    (out / "preprocess.json").write_text(json.dumps(preprocess_document(spec), indent=1))
    summary.update(onnxruntime=ort.__version__, labels_sha256=sha256(out / "labels.json"))

    onnx_model = OnnxPredictor(out)
    batch = _sample_batch(spec, calibration)
    reference, exported = torch_model.logits(batch), onnx_model.logits(batch)
    diff = float(np.abs(reference - exported).max())
    summary.update(
        parity_images=len(batch),
        parity_max_abs_diff=diff,
        parity_top1_identical=bool((reference.argmax(1) == exported.argmax(1)).all()),
    )
    if diff > PARITY_TOLERANCE:
        raise RuntimeError(
            f"{out / 'model.onnx'}: ONNX Runtime logits differ from PyTorch by {diff:.2e} "
            f"(> {PARITY_TOLERANCE}); the export is wrong, do not deploy it"
        )
    if int8:
        summary["int8"] = _quantize(out, spec, calibration, calibration_images, onnx_model, int8_activations)
    hparams = dict(torch_model.model.hparams)
    (out / "model_card.md").write_text(render_card(summary, hparams, spec, ckpt, run_dir))
    (out / "export.json").write_text(json.dumps(summary, indent=1))
    return summary


def _quantize(out: Path, spec: dict, calibration: str, n: int, fp32, activations: str = "uint8") -> dict:
    transform = eval_transform(spec)
    cal_split = _first_split(calibration, ("train", "val", "test"))
    images, _ = load_batch(calibration, cal_split, transform, limit=n)
    quantize_int8(out / "model.onnx", out / "model.int8.onnx", images.numpy(), activations=activations)
    agree_split = _first_split(calibration, ("test", "val", "train"))
    held_out, _ = load_batch(calibration, agree_split, transform, limit=AGREEMENT_IMAGES)
    int8 = OnnxPredictor(out, "model.int8.onnx")
    agreement = top1_agreement(_batched(fp32, held_out), _batched(int8, held_out))
    return {
        "activations": activations,
        "calibration": str(calibration),
        "calibration_split": cal_split,
        "calibration_images": len(images),
        "agreement_split": agree_split,
        "agreement_images": len(held_out),
        "top1_agreement": agreement,
    }


def _batched(predictor, images, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([predictor.logits(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
