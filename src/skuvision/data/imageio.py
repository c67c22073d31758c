"""Decode-check, downscale and re-encode one product image.

Originals average ~375 KB and decoding them is what starves GPUs, so shards hold
images pre-resized to a short side of ``size`` (JPEG q90, ~40 KB). JPEG draft
mode lets libjpeg downscale in the DCT domain (1/2, 1/4, 1/8) while decoding,
which is several times cheaper than a full decode followed by a resize.

Phone photos store pixels as the sensor read them plus an EXIF Orientation tag; the shards
hold them upright (the tag applied at decode, before the resize and the perceptual hash) because
the stored JPEG carries no EXIF and training must see what a person sees. The content hash stays
the sha1 of the original bytes: it only identifies the file, and splits stay where they were.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = 200_000_000  # real camera frames are large; decompression bombs are not


class RejectedImage(Exception):
    """An input image that cannot go into shards; ``str(exc)`` is the reason for rejects.csv."""


@dataclass(frozen=True)
class PreparedImage:
    jpeg: bytes
    width: int
    height: int
    content_hash: str  # sha1 of the original bytes: drives the split, stable forever
    phash: int  # 64-bit perceptual hash of the upright image, groups near-duplicate frames


def content_hash(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _target_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(width, height)
    if scale >= 1.0:  # never upscale: it adds bytes and no information
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_resized(data: bytes, short_side: int, draft: bool = True) -> Image.Image:
    """Fully decode ``data`` into an upright RGB image with shorter side ``short_side`` (or smaller).

    ``draft=False`` skips the DCT-domain downscale (only for measuring what it saves).
    """
    if not data:
        raise RejectedImage("zero bytes")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RejectedImage("not an image") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reject, not a crash
        raise RejectedImage(f"corrupt: {exc}") from None
    try:
        target = _target_size(img.width, img.height, short_side)
        if draft and img.format == "JPEG" and target != img.size:
            img.draft("RGB", target)
        img.load()
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else f"corrupt: {exc}"
        raise RejectedImage(reason) from None
    except Exception as exc:  # noqa: BLE001
        raise RejectedImage(f"corrupt: {exc}") from None
    if img.width < 8 or img.height < 8:
        raise RejectedImage(f"too small: {img.width}x{img.height}")
    try:  # the short side is the same either way, so the draft size above still holds
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a malformed EXIF block: keep the pixels as stored
        pass
    img = img.convert("RGB")
    target = _target_size(img.width, img.height, short_side)
    if target != img.size:
        img = img.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return img


def perceptual_hash(img: Image.Image) -> int:
    import imagehash  # local: only the shard builder needs it

    return int(str(imagehash.phash(img)), 16)


def prepare_image(data: bytes, short_side: int, quality: int = 90, draft: bool = True) -> PreparedImage:
    img = decode_resized(data, short_side, draft)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False)
    return PreparedImage(buf.getvalue(), img.width, img.height, content_hash(data), perceptual_hash(img))


_TENSOR_DECODER = None


def decode_to_tensor(data: bytes):
    """JPEG bytes -> uint8 RGB tensor (3, H, W), for the data loader.

    torchvision's libjpeg-turbo decoder writes straight into a CHW tensor, 1.5-2x faster here
    than PIL plus the copies into numpy and torch. torchvision 0.29 deprecates it in favour of
    TorchCodec; where it is gone, PIL takes over.
    """
    global _TENSOR_DECODER
    if _TENSOR_DECODER is None:
        _TENSOR_DECODER = _pick_tensor_decoder()
    return _TENSOR_DECODER(data)


def _pick_tensor_decoder():
    import warnings

    import torch

    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # pragma: no cover - a torchvision without its decoders
        import numpy as np

        def decode_pil(data: bytes):
            img = Image.open(io.BytesIO(data)).convert("RGB")
            return torch.from_numpy(np.array(img)).permute(2, 0, 1)

        return decode_pil

    def decode_tv(data: bytes):
        with warnings.catch_warnings():  # the deprecation notice, once per image otherwise
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)

    return decode_tv
