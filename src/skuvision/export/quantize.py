"""Static INT8 quantisation of the fp32 export (ONNX Runtime, QDQ), calibrated on shard images.

Following ONNX Runtime's quantisation guide: uint8 activations by default (U8S8, fastest on x86
with VNNI; ``activations="int8"`` for CPUs without it, where U8S8 can saturate); per-channel
weights (depthwise convolutions' per-channel ranges differ wildly); the graph pre-processed first
(BatchNorm folded) so scales fit the fused graph; MinMax calibration on real shard images through
the eval transform; softmax kept fp32. The top-1 agreement with fp32 is measured at export and
recorded in the model card (figures: BENCHMARKS.md, Inference at the counter).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

# Deferred on purpose: onnx/onnxruntime load only for export, predict and evaluate on an export dir.

ACTIVATIONS = ("uint8", "int8")


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    batch_size: int = 16,
    activations: str = "uint8",
) -> Path:
    """``calibration``: float32 (N, 3, S, S) eval-transformed images. Writes and returns ``out_path``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([calibration[i : i + batch_size] for i in range(0, len(calibration), batch_size)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": np.ascontiguousarray(batch, dtype=np.float32)}

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="skuvision-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        import onnx

        softmax = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Softmax"]
        quantize_static(
            str(prepared),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
            per_channel=True,
            reduce_range=False,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=softmax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    return out_path


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of images whose top-1 class is the same in both logit arrays."""
    if len(reference) == 0:
        return float("nan")
    return float(np.mean(reference.argmax(1) == candidate.argmax(1)))
