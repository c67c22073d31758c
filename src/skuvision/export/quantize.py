"""Static INT8 quantisation of the fp32 export (ONNX Runtime, QDQ), calibrated on shard images.

Settings, and why (ONNX Runtime's quantisation guide; the ONNX model zoo's ResNet50 QDQ model
keeps top-1 within 0.2 points this way):

- QDQ format, int8 activations and int8 weights (S8S8): the guide's default and first choice on
  CPU. U8S8 on x86 CPUs without VNNI runs through VPMADDUBSW, which can saturate and collapse
  accuracy unless ``reduce_range`` is set; S8S8 avoids that instruction's failure mode.
- per-channel weights: depthwise convolutions (EfficientNet, MobileNet) have wildly different
  ranges per channel, and one scale per tensor wipes out the small ones: the classic collapse.
- the model is first pre-processed (``quant_pre_process``: shape inference + graph
  optimisation, BatchNorm folded into convolutions) so scales are computed on the fused graph.
- calibration on real shard images through the eval transform (MinMax over a few hundred
  images); ``softmax`` stays fp32 (its input range is unbounded, and it costs nothing).

The INT8 model's top-1 agreement with fp32 on a held-out split is measured at export time and
recorded in ``model_card.md`` and the export summary.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: np.ndarray, batch_size: int = 16) -> Path:
    """``calibration``: float32 (N, 3, S, S) eval-transformed images. Writes and returns ``out_path``."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([calibration[i:i + batch_size] for i in range(0, len(calibration), batch_size)])

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
            str(prepared), str(out_path), Reader(),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            per_channel=True, reduce_range=False, calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=softmax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    return out_path


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of images whose top-1 class is the same in both logit arrays."""
    if len(reference) == 0:
        return float("nan")
    return float(np.mean(reference.argmax(1) == candidate.argmax(1)))
