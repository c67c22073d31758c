"""Decode-check, downscale and re-encode one product image.

Originals average ~375 KB and decoding them is what starves GPUs, so shards hold
images pre-resized to a short side of ``size`` (JPEG q90, ~40 KB). JPEG draft
mode lets libjpeg downscale in the DCT domain (1/2, 1/4, 1/8) while decoding,
which is several times cheaper than a full decode followed by a resize.

Phone photos store pixels as the sensor read them plus an EXIF Orientation tag; the shards
hold them upright (the tag applied at decode, before the resize and the perceptual hash) because
the stored JPEG carries no EXIF and training must see what a person sees. The content hash stays
the sha1 of the original bytes: it only identifies the file, and splits stay where they were.

What an input file becomes (each rule backed by ``tests/test_input_long_tail.py``; a reject is a
row in rejects.csv with the reason, never an exception out of the build):

* not decodable (zero bytes, not an image, truncated, corrupt, any decoder error): rejected.
* decompression bomb: a header claiming more than ``Image.MAX_IMAGE_PIXELS`` (200 M) pixels is
  rejected from the header alone, before any pixel is allocated ("decompression bomb: ...").
* smaller than ``MIN_SIDE`` (8) px on a side: rejected ("too small"); an aspect ratio above
  ``MAX_ASPECT`` (10:1), a panorama or a strip, is not one product: rejected ("aspect ratio").
* animated GIF/WebP/PNG: the first frame, like a still.
* 16-bit grayscale (PNG "I;16", "I"): scaled to 8 bits (value / 257), not clipped to white;
  16-bit RGB PNGs are read by PIL as 8-bit RGB.
* transparency (RGBA, LA, palette or colour-key transparency): composited over white, the
  background of catalogue shots (dropping alpha would show whatever colour transparent pixels hold).
* CMYK, grayscale, palette: converted to RGB by PIL (no ICC colour management).
PIL's warnings (bomb warning, palette transparency, corrupt EXIF) are silenced per image: a
catalogue of millions must not print one line per odd file.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass

import imagehash
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

Image.MAX_IMAGE_PIXELS = 200_000_000  # real camera frames are large; decompression bombs are not
MIN_SIDE = 8  # px: below this there is no product to see
MAX_ASPECT = 10.0  # long side / short side: beyond it a panorama or strip, not one product


class UnreadableImage(Exception):
    """An image that cannot be read or used; ``str(exc)`` is the reason (rejects.csv, predict's error column)."""


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

    Raises ``UnreadableImage`` (the reason) for anything that cannot go into shards, never another
    exception. ``draft=False`` skips the DCT-domain downscale (only for measuring what it saves).
    """
    if not data:
        raise UnreadableImage("zero bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _decode(data, short_side, draft)
        except UnreadableImage:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a reject, not a crash
            raise UnreadableImage(f"corrupt: {type(exc).__name__}: {exc}") from None


def _bomb(pixels: int, size: str = "") -> UnreadableImage:
    return UnreadableImage(f"decompression bomb: {size}{pixels:,} pixels, over the limit of {Image.MAX_IMAGE_PIXELS:,}")


def _decode(data: bytes, short_side: int, draft: bool) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnreadableImage("not an image") from None
    except Image.DecompressionBombError as exc:  # over twice the limit: PIL refuses at open
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise (_bomb(int(found.group(1))) if found else UnreadableImage(f"decompression bomb: {exc}")) from None
    except Exception as exc:  # noqa: BLE001
        raise UnreadableImage(f"corrupt: {exc}") from None
    width, height = img.size  # from the header: checked before any pixel is allocated
    if width * height > Image.MAX_IMAGE_PIXELS:
        raise _bomb(width * height, f"{width}x{height} = ")
    if min(width, height) < MIN_SIDE:
        raise UnreadableImage(f"too small: {width}x{height}")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise UnreadableImage(
            f"aspect ratio {max(width, height) / min(width, height):.1f}:1 ({width}x{height}) is above "
            f"{MAX_ASPECT:.0f}:1: a panorama or strip, not one product"
        )
    try:
        target = _target_size(width, height, short_side)
        if draft and img.format == "JPEG" and target != img.size:
            img.draft("RGB", target)
        img.load()  # an animated file: its first frame
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else f"corrupt: {exc}"
        raise UnreadableImage(reason) from None
    img = to_rgb(upright(img))  # the short side is the same either way, so the draft size above still holds
    target = _target_size(img.width, img.height, short_side)
    if target != img.size:
        img = img.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return img


def upright(img: Image.Image) -> Image.Image:
    """The image as a person sees it (EXIF Orientation applied); a malformed EXIF block keeps the pixels as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit grayscale scaled (not clipped), transparency composited over white."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        values = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(values / 257.0 + 0.5, 0, 255).astype(np.uint8), "L")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if not has_alpha:
        return img if img.mode == "RGB" else img.convert("RGB")
    rgba = img.convert("RGBA")
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=rgba.getchannel("A"))
    return white


def perceptual_hash(img: Image.Image) -> int:
    return int(str(imagehash.phash(img)), 16)


def prepare_image(data: bytes, short_side: int, quality: int = 90, draft: bool = True) -> PreparedImage:
    """Decode, resize and re-encode one input file; ``UnreadableImage`` is the only exception it raises."""
    img = decode_resized(data, short_side, draft)
    try:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality, optimize=False)
        return PreparedImage(buf.getvalue(), img.width, img.height, content_hash(data), perceptual_hash(img))
    except Exception as exc:  # noqa: BLE001 - never seen; one odd file must not end a build of millions
        raise UnreadableImage(f"cannot re-encode: {type(exc).__name__}: {exc}") from None


def decode_to_tensor(data: bytes):
    """JPEG bytes -> uint8 RGB tensor (3, H, W), for the data loader.

    torchvision's libjpeg-turbo decoder writes straight into a CHW tensor, 1.5-2x faster here
    than PIL plus the copies into numpy and torch.
    """
    with warnings.catch_warnings():  # torchvision 0.29's deprecation notice, once per image otherwise
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
