"""PyTorch -> ONNX with a dynamic batch, on torch 2.4.1 (the SageMaker image) and on the newest torch.

``exporter="auto"`` uses the TorchScript-based ("legacy") exporter wherever it exists: torch 2.4's
``dynamo=True`` ignores file, opset and names, and the torch.export-based default of 2.9+ needs
onnxscript, opset >= 18 and an external-data flag, and is much slower; the legacy one gives the
same graph on 2.4.1 and on the newest torch. The dynamo exporter runs only where the legacy one is
gone, or with ``exporter="dynamo"``. Either way: one self-contained ``model.onnx``, checked with
``onnx.checker``.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import torch
from torch import nn

from skuvision.errors import UserError

# Deferred on purpose: onnx/onnxruntime load only for export, predict and evaluate on an export dir.

INPUT, OUTPUTS = "images", ("logits", "probabilities")
DEFAULT_OPSET = 17  # ONNX Runtime >= 1.12 on the counter; the dynamo exporter raises it to 18
DYNAMO_MIN_OPSET = 18
EXPORTERS = ("auto", "legacy", "dynamo")


class CounterModel(nn.Module):
    """What the counter runs: normalised float32 (N, 3, S, S) -> logits and softmax probabilities."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(images)
        return logits, torch.softmax(logits, dim=1)


def has_dynamo_flag() -> bool:
    """``torch.onnx.export`` takes ``dynamo=`` (torch >= 2.4; pass ``dynamo=False`` for the legacy exporter)."""
    return "dynamo" in inspect.signature(torch.onnx.export).parameters


def dynamo_usable() -> bool:
    """torch >= 2.5: the dynamo exporter honours ``dynamic_shapes`` and ``external_data``."""
    params = inspect.signature(torch.onnx.export).parameters
    return "dynamo" in params and "dynamic_shapes" in params and "external_data" in params


def legacy_available() -> bool:
    """The TorchScript-based exporter is still in this torch (``torch.onnx.utils.export``)."""
    try:
        from torch.onnx import utils
    except ImportError:  # pragma: no cover - a torch without it
        return False
    return hasattr(utils, "export")


def pick_exporter(requested: str = "auto") -> str:
    if requested not in EXPORTERS:
        raise UserError(f"--exporter {requested}: use one of {', '.join(EXPORTERS)}")
    if requested == "auto":
        return "legacy" if legacy_available() else "dynamo"
    if requested == "dynamo" and not dynamo_usable():
        raise UserError(
            f"--exporter dynamo: torch {torch.__version__} has no usable dynamo ONNX exporter (needs "
            "torch >= 2.5); use --exporter legacy or auto"
        )
    return requested


def export_onnx(
    classifier: nn.Module, path: str | Path, image_size: int, opset: int = DEFAULT_OPSET, exporter: str = "auto"
) -> dict:
    """Write ``path`` (one file, fp32, dynamic batch); returns what was used: exporter, opset, torch."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    which = pick_exporter(exporter)
    model = CounterModel(classifier).eval().float()
    example = torch.zeros(2, 3, int(image_size), int(image_size))  # batch 2: a batch of 1 invites specialisation
    common = dict(input_names=[INPUT], output_names=list(OUTPUTS), do_constant_folding=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice on new torch
        if which == "legacy":
            kwargs = {"dynamo": False} if has_dynamo_flag() else {}
            torch.onnx.export(
                model,
                (example,),
                str(path),
                opset_version=int(opset),
                dynamic_axes={name: {0: "batch"} for name in (INPUT, *OUTPUTS)},
                **common,
                **kwargs,
            )
        else:
            opset = max(int(opset), DYNAMO_MIN_OPSET)
            torch.onnx.export(
                model,
                (example,),
                str(path),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}},
                verbose=False,
                **common,
            )
    check_model(path)
    return {"exporter": which, "opset": int(opset), "torch": torch.__version__}


def check_model(path: str | Path) -> None:
    """onnx.checker on the file, plus the input/output contract the counter relies on."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    names_in = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    names_out = [o.name for o in model.graph.output]
    if names_in != [INPUT] or names_out != list(OUTPUTS):
        raise RuntimeError(f"{path}: inputs {names_in}, outputs {names_out}; expected [{INPUT}], {list(OUTPUTS)}")
