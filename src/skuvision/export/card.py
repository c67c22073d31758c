"""``model_card.md``: what a deployed model is, what it was trained on, and how well it does.

Someone at a counter months later must be able to tell which training data and which checkpoint
a ``model.onnx`` came from without the training machine: the card names the training data
manifest with its SHA-256 (the manifest pins every SKU's index and every image's split), the
checkpoint's SHA-256 and the run's metrics, next to the input contract.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from skuvision.export.runtime import run_config, run_dir_of
from skuvision.files import sha256


def training_data_root(ckpt_path: str | Path, run_dir: str | Path | None = None) -> str:
    """The run's ``data.root``; a relative one resolved against the run's working dir (Hydra's
    ``runtime.cwd`` in ``.hydra/hydra.yaml``). Empty when the run config is missing or unresolvable."""
    try:
        cfg = run_config(ckpt_path, run_dir)
        root = str(cfg.data.get("root") or "") if cfg is not None and "data" in cfg else ""
    except Exception:  # noqa: BLE001 - an interpolation only Hydra can resolve: the card says unknown
        return ""
    if not root or "://" in root or Path(root).is_absolute():
        return root
    d = Path(run_dir) if run_dir else run_dir_of(ckpt_path)
    hydra_yaml = d / ".hydra" / "hydra.yaml" if d else None
    try:
        cwd = OmegaConf.load(hydra_yaml).hydra.runtime.cwd if hydra_yaml and hydra_yaml.is_file() else "."
    except Exception:  # noqa: BLE001
        cwd = "."
    return str((Path(cwd) / root).resolve())


def training_data(ckpt_path: str | Path, run_dir: str | Path | None = None) -> dict:
    """The run's ``data.root`` and its manifest's hash, when the run dir and the shards are reachable."""
    root = training_data_root(ckpt_path, run_dir)
    if not root:
        return {"manifest": "unknown (no .hydra/config.yaml of the run next to the checkpoint)", "sha256": ""}
    manifest = f"{root.rstrip('/')}/manifest.json"
    if Path(manifest).is_file():
        return {"manifest": manifest, "sha256": sha256(manifest)}
    return {"manifest": manifest, "sha256": "not reachable from the exporting machine"}


def run_metrics(ckpt_path: str | Path, run_dir: str | Path | None = None) -> dict:
    """``metrics.json`` of the run (the run dir, or next to the checkpoint as in SM_MODEL_DIR)."""
    ckpt_path = Path(ckpt_path).resolve()
    for d in filter(None, [Path(run_dir) if run_dir else None, run_dir_of(ckpt_path), ckpt_path.parent]):
        if (d / "metrics.json").is_file():
            return json.loads((d / "metrics.json").read_text())
    return {}


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render_card(
    summary: dict, hparams: dict, spec: dict, ckpt_path: str | Path, run_dir: str | Path | None = None
) -> str:
    data, metrics = training_data(ckpt_path, run_dir), run_metrics(ckpt_path, run_dir)
    shown = {
        k: metrics[k]
        for k in ("val/top1", "test/top1", "test/top5", "epochs", "params/total", "params/trainable")
        if k in metrics
    }
    s = spec["crop"]
    lines = [
        f"# Model card: {hparams['backbone']} SKU classifier ({hparams['num_classes']} SKUs)",
        "",
        "## Model",
        "",
        f"- backbone `{hparams['backbone']}`, freeze depth {hparams['freeze_depth']}, head {hparams.get('head') or {}}",
        f"- image size {s} px (eval: shorter side {spec['resize']} px, {spec['interpolation']}, centre crop {s}×{s})",
        f"- checkpoint `{Path(ckpt_path).resolve()}` (sha256 `{sha256(ckpt_path)}`)",
        f"- exported with the {summary['exporter']} torch.onnx exporter, opset {summary['opset']}, "
        f"torch {summary['torch']}, onnxruntime {summary['onnxruntime']}",
        "",
        "## Training data",
        "",
        f"- manifest `{data['manifest']}`" + (f" (sha256 `{data['sha256']}`)" if data["sha256"] else ""),
        f"- labels.json sha256 `{summary['labels_sha256']}`",
        "",
        "## Metrics (training run)",
        "",
    ]
    lines += [f"- {k}: {_fmt(v)}" for k, v in shown.items()] or ["- no metrics.json found next to the checkpoint"]
    crops, crop_pct = metrics.get("test/crops", 1), metrics.get("test/crop_pct", spec["crop_pct"])
    if "test/top1" in metrics and (crops > 1 or crop_pct != spec["crop_pct"]):
        lines.append(
            f"- the test scored each photo as {int(crops)} crops at crop_pct {_fmt(crop_pct)} (`data.test_crops`, "
            "`data.test_crop_pct`); this export predicts one centre crop: `skuvision evaluate EXPORT SHARDS` gives "
            f"its accuracy, `--crops {int(crops)} --crop-pct {crop_pct}` the run's"
        )
    lines += [
        "",
        "## Export checks",
        "",
        f"- ONNX Runtime fp32 vs PyTorch, {summary['parity_images']} images: max |logit difference| "
        f"{summary['parity_max_abs_diff']:.2e}, top-1 identical: {summary['parity_top1_identical']}",
    ]
    if "int8" in summary:
        q = summary["int8"]
        lines.append(
            f"- `model.int8.onnx` (static QDQ, int8 per-channel weights, {q['activations']} activations, "
            f"{q['calibration_images']} calibration images from "
            f"`{q['calibration']}` split {q['calibration_split']}): top-1 agreement with fp32 "
            f"{q['top1_agreement']:.4f} on {q['agreement_images']} images of split {q['agreement_split']}"
        )
    mean, std = ", ".join(f"{m:.4f}" for m in spec["mean"]), ", ".join(f"{v:.4f}" for v in spec["std"])
    lines += [
        "",
        "## Input and output",
        "",
        f"- input `images`: float32, NCHW (batch, 3, {s}, {s}), RGB; pixel/255, minus mean ({mean}), divided by std ({std})",
        "- outputs `logits` and `probabilities` (softmax): float32 (batch, classes); class i is `labels.json` classes[i]",
        "- `preprocess.json` holds every preprocessing value; batch size is dynamic",
        "",
    ]
    return "\n".join(lines)
