"""Decode-check, downscale and re-encode one product image.

Originals average ~375 KB and decoding them is what starves GPUs, so shards hold
images pre-resized to a short side of ``size`` (JPEG q90, ~40 KB). JPEG draft
mode lets libjpeg downscale in the DCT domain (1/2, 1/4, 1/8) while decoding,
which is several times cheaper than a full decode followed by a resize.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = 200_000_000  # real camera frames are large; decompression bombs are not


class RejectedImage(Exception):
    """An input image that cannot go into shards; ``str(exc)`` is the reason for rejects.csv."""


@dataclass(frozen=True)
class PreparedImage:
    jpeg: bytes
    width: int
    height: int
    content_hash: str  # sha1 of the original bytes: drives the split, stable forever
    phash: int  # 64-bit perceptual hash, groups near-duplicate frames


def content_hash(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _target_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(width, height)
    if scale >= 1.0:  # never upscale: it adds bytes and no information
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_resized(data: bytes, short_side: int) -> Image.Image:
    """Fully decode ``data`` into an RGB image with shorter side ``short_side`` (or smaller)."""
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
        if img.format == "JPEG" and target != img.size:
            img.draft("RGB", target)
        img.load()
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else f"corrupt: {exc}"
        raise RejectedImage(reason) from None
    except Exception as exc:  # noqa: BLE001
        raise RejectedImage(f"corrupt: {exc}") from None
    if img.width < 8 or img.height < 8:
        raise RejectedImage(f"too small: {img.width}x{img.height}")
    img = img.convert("RGB")
    target = _target_size(img.width, img.height, short_side)
    if target != img.size:
        img = img.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return img


def perceptual_hash(img: Image.Image) -> int:
    import imagehash  # local: only the shard builder needs it

    return int(str(imagehash.phash(img)), 16)


def prepare_image(data: bytes, short_side: int, quality: int = 90) -> PreparedImage:
    img = decode_resized(data, short_side)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False)
    return PreparedImage(buf.getvalue(), img.width, img.height, content_hash(data), perceptual_hash(img))
