"""One predictor interface over an export dir (ONNX Runtime) or a checkpoint (PyTorch), and image reading.

``skuvision predict`` and ``evaluate`` take either; both backends get the same float32 batch from
the same eval transform (``skuvision.data.transforms.eval_transform`` of the model's
``preprocess_spec``), so a checkpoint and its export give the same answers, and the export's
``preprocess.json`` is that very spec.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image, UnidentifiedImageError

from skuvision.data.imageio import UnreadableImage, decode_to_tensor, to_rgb, upright
from skuvision.data.labels import LabelMap
from skuvision.data.preprocess import preprocess_spec
from skuvision.data.transforms import eval_transform
from skuvision.errors import UserError
from skuvision.model.module import load_classifier

# Deferred on purpose: onnx/onnxruntime load only for export, predict and evaluate on an export dir.

EXPORT_FILES = ("model.onnx", "labels.json", "preprocess.json")
JPEG_MAGIC = b"\xff\xd8"


def _exif_orientation(data: bytes) -> int:
    """The EXIF Orientation tag (1 = as stored) of an encoded image, read from its header only."""
    try:
        return int(Image.open(io.BytesIO(data)).getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - unreadable header: the decoders below say what is wrong
        return 1


def read_image(path: str | Path):
    """uint8 RGB tensor (3, H, W) of an image file, decoded as the data loader decodes shard JPEGs.

    JPEGs go through the loader's own decoder (``decode_to_tensor``), anything else through PIL.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"unreadable: {exc.strerror or exc}") from None
    if not data:
        raise UnreadableImage("zero bytes")
    if data.startswith(JPEG_MAGIC) and _exif_orientation(data) == 1:
        try:
            return decode_to_tensor(data)
        except (RuntimeError, OSError):
            pass  # PIL says why, below
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        array = np.asarray(to_rgb(upright(img)))  # as the shard builder stores it: upright, alpha over white
    except UnidentifiedImageError:
        raise UnreadableImage("not an image") from None
    except OSError as exc:
        raise UnreadableImage("truncated" if "truncated" in str(exc).lower() else f"corrupt: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is an error row, not a crash
        raise UnreadableImage(f"corrupt: {exc}") from None
    if data.startswith(JPEG_MAGIC) and _exif_orientation(data) == 1:
        raise UnreadableImage("corrupt JPEG: the decoder rejected it")
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _run_config_dirs(ckpt_path: Path) -> list[Path]:
    """Where a checkpoint's run dir may be: ``RUN/checkpoints/x.ckpt`` or ``RUN/x.ckpt``."""
    return [ckpt_path.parent.parent, ckpt_path.parent]


def run_dir_of(ckpt_path: str | Path) -> Path | None:
    """The training run dir holding this checkpoint (it has ``.hydra/config.yaml``), if any."""
    for d in _run_config_dirs(Path(ckpt_path).resolve()):
        if (d / ".hydra" / "config.yaml").is_file():
            return d
    return None


def run_config(ckpt_path: str | Path, run_dir: str | Path | None = None):
    """The resolved Hydra config of the run that wrote the checkpoint (or of ``run_dir``), or None."""
    d = Path(run_dir) if run_dir else run_dir_of(ckpt_path)
    config = d / ".hydra" / "config.yaml" if d else None
    return OmegaConf.load(config) if config and config.is_file() else None


def checkpoint_spec(
    ckpt_path: str | Path,
    hparams: dict,
    image_size: int | None = None,
    run_dir: str | Path | None = None,
    stored: dict | None = None,
) -> dict:
    """The eval preprocessing a checkpoint was tested with: ``preprocess_spec(backbone, data.image_size)``.

    ``image_size`` (``--image-size``) wins; else the spec the checkpoint carries (``stored``: every
    checkpoint written since it was added); else the run's ``.hydra/config.yaml`` (``run_dir``, else the
    checkpoint's own run dir).
    """
    if image_size is None and stored:
        return dict(stored)
    if image_size is None:
        cfg = run_config(ckpt_path, run_dir)
        image_size = cfg.data.get("image_size") if cfg is not None and "data" in cfg else None
    if image_size is None:
        raise UserError(
            f"{ckpt_path}: no .hydra/config.yaml of its run next to it, so the image size is unknown; "
            "pass --image-size PX (the run's data.image_size)"
        )
    return preprocess_spec(hparams["backbone"], int(image_size))


def labels_document(label_map: dict | LabelMap) -> dict:
    """``labels.json``: class index -> SKU id, brand, category, in index order."""
    lm = label_map if isinstance(label_map, LabelMap) else LabelMap.from_dict(label_map)
    classes = [
        {"index": i, "sku_id": s, "brand": lm.brands.get(s, ""), "category": lm.categories.get(s, "")}
        for i, s in enumerate(lm.skus)
    ]
    return {"num_classes": len(classes), "classes": classes}


def label_map_from_document(doc: dict) -> LabelMap:
    classes = doc["classes"]
    lm = LabelMap({c["sku_id"]: int(c["index"]) for c in classes})
    for c in classes:
        lm.set_attributes(c["sku_id"], c.get("brand"), c.get("category"))
    return lm


class Predictor:
    """Logits for a float32 (N, 3, S, S) batch made by ``self.transform``; ``labels`` names the classes."""

    backend = ""

    def __init__(self, source: Path, spec: dict, labels: LabelMap):
        self.source, self.spec, self.labels = source, spec, labels

        self.transform = eval_transform(spec)

    def logits(self, batch) -> np.ndarray:
        raise NotImplementedError


class TorchPredictor(Predictor):
    backend = "pytorch"

    def __init__(self, ckpt_path: Path, image_size: int | None = None, run_dir: str | Path | None = None):
        try:
            self.model = load_classifier(str(ckpt_path)).eval()
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - unpickling errors, missing keys, wrong shapes: not a checkpoint of ours
            raise UserError(
                f"MODEL {ckpt_path}: not a skuvision checkpoint ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); pass a .ckpt from a run's "
                "checkpoints/ or an export dir"
            ) from None
        hparams = dict(self.model.hparams)
        super().__init__(
            ckpt_path,
            checkpoint_spec(ckpt_path, hparams, image_size, run_dir, self.model.preprocess),
            LabelMap.from_dict(self.model.label_map or {str(i): i for i in range(hparams["num_classes"])}),
        )
        self._torch = torch

    def logits(self, batch) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.as_tensor(batch)).float().numpy()


class OnnxPredictor(Predictor):
    backend = "onnxruntime"

    def __init__(self, export_dir: Path, model_file: str = "model.onnx", threads: int | None = None):
        import onnxruntime as ort

        spec = json.loads((export_dir / "preprocess.json").read_text())
        labels = label_map_from_document(json.loads((export_dir / "labels.json").read_text()))
        super().__init__(export_dir, spec, labels)
        options = ort.SessionOptions()
        # idle threads sleep instead of spinning, as torch's do here (OMP_WAIT_POLICY=PASSIVE): on a shared
        # CPU spinning threads starve the ones doing work (measured: 2x slower batch-1 at load 8 on 2 cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(export_dir / model_file), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.model_file = model_file

    def logits(self, batch) -> np.ndarray:
        array = batch.numpy() if hasattr(batch, "numpy") else np.asarray(batch)
        return self.session.run(["logits"], {self.input_name: np.ascontiguousarray(array, dtype=np.float32)})[0]


def load_predictor(
    model: str | Path, image_size: int | None = None, int8: bool = False, threads: int | None = None
) -> Predictor:
    """An export dir (has model.onnx, labels.json, preprocess.json) or a ``.ckpt`` file."""
    path = Path(model)
    if path.is_dir():
        missing = [f for f in EXPORT_FILES if not (path / f).is_file()]
        if missing:
            raise UserError(
                f"MODEL {path}: not an export dir (missing {', '.join(missing)}); "
                "pass a dir written by `skuvision export` or a .ckpt file"
            )
        model_file = "model.int8.onnx" if int8 else "model.onnx"
        if not (path / model_file).is_file():
            raise UserError(
                f"MODEL {path}: no {model_file}; export with `skuvision export CKPT --int8 --calibration SHARDS`"
            )
        return OnnxPredictor(path, model_file, threads)
    if path.is_file():
        if int8:
            raise UserError(f"--int8 needs an export dir as MODEL, not the checkpoint {path}")
        return TorchPredictor(path, image_size)
    raise UserError(f"MODEL {path}: no such file or directory; pass an export dir or a .ckpt checkpoint")
