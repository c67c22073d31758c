"""Procedurally rendered packaged products (SKUs).

Why: tests and the CPU quickstart cannot download a dataset, yet need a catalogue that
behaves like a shelf: brand families whose members differ only by a variant label and an
accent band (fine-grained), shot under random camera pose, light, clutter and occlusion.
Every image is a pure function of (seed, sku, index), so any image can be re-rendered alone
and parallel writers produce identical bytes. Only PIL + numpy are used.

``views="studio"`` renders the other way SKU images are made: a rig shooting every product
on one plain backdrop from a fixed angle, so all images of a SKU look alike (pose, light and
framing vary by ~1-2 %). Split and near-duplicate logic must cope with both.
"""

from __future__ import annotations

import colorsys
import csv
import hashlib
import math
import multiprocessing
import pathlib
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont
from tqdm.auto import tqdm

RGB = tuple[int, int, int]
CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # -> (shapes, variants)
    "snacks": (("pouch", "box"), ("150g", "200g", "Salted", "Paprika", "Chili", "BBQ")),
    "dairy": (("bottle", "box"), ("500ml", "1L", "Light", "Whole", "Bio")),
    "beverages": (("can", "bottle"), ("330ml", "500ml", "1.5L", "Zero", "Lemon", "Cherry")),
    "cereal": (("box", "pouch"), ("375g", "500g", "750g", "Honey", "Choco")),
    "household": (("bottle", "box"), ("500ml", "1L", "Lemon", "Fresh", "Ultra")),
    "personal-care": (("bottle", "can"), ("250ml", "400ml", "Mint", "Aloe", "Sport")),
}
LOGOS = ("circle", "star", "triangle", "diamond")
VIEWS = ("shelf", "studio")  # in-store camera views | low-variation studio rig shots
STUDIO_JITTER = 0.08  # studio pose/light jitter as a share of the shelf ranges
_ONSETS = "b c d f g k l m n p r s t v z br kr pl st tr".split()
_VOWELS = "a e i o u a o ai ea".split()
_CODAS = ("", "", "", "n", "x", "s", "l", "r")


@dataclass(frozen=True)
class SKUSpec:
    sku_id: str
    brand: str
    category: str
    shape: str  # box | bottle | can | pouch
    variant: str  # differs within a family
    family: int  # index of the brand family inside its catalogue
    base_rgb: RGB  # family-wide package colour
    text_rgb: RGB  # family-wide brand text colour
    logo: str  # circle | star | triangle | diamond
    logo_rgb: RGB
    accent_rgb: RGB  # accent band colour, differs within a family


def _h(*parts) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def _check(name: str, value, lo: int, hint: str, hi: int | None = None) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an integer {rng}, got {value!r}; {hint}")


def _hsv(h: float, s: float, v: float) -> RGB:
    return tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))  # type: ignore


def _ink(bg: RGB) -> RGB:  # legible text colour on top of bg
    return (250, 250, 245) if 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2] < 150 else (20, 20, 25)


def _brand(rng: np.random.Generator) -> str:
    syl = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(3)]
    return ("".join(syl) + rng.choice(_CODAS)).capitalize()


def make_catalogue(num_skus: int, seed: int = 0) -> list[SKUSpec]:
    """SKUs in families of 2-4 sharing brand, category, shape, palette and logo.

    make_catalogue(n, seed) is a prefix of make_catalogue(m, seed) for n < m, so a SKU id
    always denotes the same product; only the last family may be cut short.
    """
    _check("num_skus", num_skus, 1, "ask for at least one SKU")
    specs: list[SKUSpec] = []
    brands: set[str] = set()
    fam = 0
    while len(specs) < num_skus:
        rng = np.random.default_rng(_h("family", seed, fam))
        brand = _brand(rng)
        while brand in brands:
            brand = _brand(rng)
        brands.add(brand)
        category = list(CATEGORIES)[int(rng.integers(len(CATEGORIES)))]
        shapes, variants = CATEGORIES[category]
        n = int(rng.integers(2, 5))
        hue = rng.random()
        base = _hsv(hue, rng.uniform(0.5, 0.95), rng.uniform(0.3, 0.85))
        shape = str(rng.choice(shapes))
        logo = LOGOS[int(rng.integers(len(LOGOS)))]
        logo_rgb = _hsv(hue + rng.uniform(0.35, 0.65), 0.85, 0.95)
        picks = rng.choice(len(variants), size=n, replace=False)
        for k in range(
            min(n, num_skus - len(specs))
        ):  # accent hues far from the base hue, evenly spread, alternating value
            accent = _hsv(hue + 0.2 + 0.6 * (k + 0.5) / n, 0.9, 0.95 if k % 2 == 0 else 0.55)
            sku_id = f"SKU-{_h('sku', seed, len(specs)):016x}"[:12]
            specs.append(
                SKUSpec(
                    sku_id, brand, category, shape, variants[picks[k]], fam, base, _ink(base), logo, logo_rgb, accent
                )
            )
        fam += 1
    return specs


@lru_cache(maxsize=128)
def _font(px: int):
    try:
        return ImageFont.load_default(size=px)  # bundled TrueType on Pillow >= 10.1
    except Exception:  # older Pillow / no FreeType: bitmap font, scaled in _text
        return None


def _text(img: Image.Image, box, text: str, fill: RGB) -> None:
    """Draws bold text as large as fits into box (x0, y0, x1, y1), centred."""
    x0, y0, x1, y1 = box
    bw, bh = max(1, int(x1 - x0)), max(1, int(y1 - y0))
    font = _font(64)
    if font is None:  # render with the bitmap font, then stretch the mask into the box
        mask = Image.new("L", (6 * len(text) + 2, 12))
        ImageDraw.Draw(mask).text((1, 0), text, fill=255, font=ImageFont.load_default())
        k = min(bw / mask.width, bh / mask.height)
        mask = mask.resize((max(1, int(mask.width * k)), max(1, int(mask.height * k))))
        img.paste(fill, (int(x0 + (bw - mask.width) / 2), int(y0 + (bh - mask.height) / 2)), mask)
        return
    d = ImageDraw.Draw(img)
    left, t, r, b = d.textbbox((0, 0), text, font=font, stroke_width=4)
    px = max(6, int(64 * min(bw / (r - left), bh / (b - t))))
    font, sw = _font(px), max(1, px // 14)
    left, t, r, b = d.textbbox((0, 0), text, font=font, stroke_width=sw)
    d.text(
        (x0 + (bw - (r - left)) / 2 - left, y0 + (bh - (b - t)) / 2 - t),
        text,
        font=font,
        fill=fill,
        stroke_width=sw,
        stroke_fill=fill,
    )


def _logo(d: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, fill: RGB, edge: RGB):
    if kind == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=edge, width=max(1, int(r / 6)))
        d.ellipse((cx - r / 2.5, cy - r / 2.5, cx + r / 2.5, cy + r / 2.5), fill=edge)
        return
    if kind == "star":
        pts = [
            (
                cx + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / 5),
                cy - (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / 5),
            )
            for i in range(10)
        ]
    elif kind == "triangle":
        pts = [(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)]
    else:
        pts = [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    d.polygon(pts, fill=fill, outline=edge, width=max(1, int(r / 6)))


def _draw_package(spec: SKUSpec, t: int) -> Image.Image:
    """The product on a transparent t x t canvas (front view)."""
    mask, rgb = Image.new("L", (t, t), 0), Image.new("RGB", (t, t), spec.base_rgb)
    md, d = ImageDraw.Draw(mask), ImageDraw.Draw(rgb)
    cx, dark = t / 2, tuple(int(c * 0.55) for c in spec.base_rgb)
    if spec.shape == "box":
        x0, y0, x1, y1 = cx - 0.33 * t, 0.1 * t, cx + 0.23 * t, 0.95 * t
        side = [(x1, y0), (x1 + 0.1 * t, y0 - 0.06 * t), (x1 + 0.1 * t, y1 - 0.06 * t), (x1, y1)]
        top = [(x0, y0), (x0 + 0.1 * t, y0 - 0.06 * t), (x1 + 0.1 * t, y0 - 0.06 * t), (x1, y0)]
        for poly in (side, top, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]):
            md.polygon(poly, fill=255)
        body = (x0, y0, x1, y1)
    elif spec.shape == "can":
        x0, x1, e = cx - 0.25 * t, cx + 0.25 * t, 0.05 * t
        md.rectangle((x0, 0.1 * t, x1, 0.9 * t), fill=255)
        md.ellipse((x0, 0.1 * t - e, x1, 0.1 * t + e), fill=255)
        md.ellipse((x0, 0.9 * t - e, x1, 0.9 * t + e), fill=255)
        body = (x0, 0.1 * t + e, x1, 0.9 * t - e)
    elif spec.shape == "bottle":
        x0, x1 = cx - 0.22 * t, cx + 0.22 * t
        md.rounded_rectangle((x0, 0.3 * t, x1, 0.96 * t), radius=0.07 * t, fill=255)
        md.polygon([(x0, 0.38 * t), (cx - 0.08 * t, 0.18 * t), (cx + 0.08 * t, 0.18 * t), (x1, 0.38 * t)], fill=255)
        md.rectangle((cx - 0.08 * t, 0.04 * t, cx + 0.08 * t, 0.2 * t), fill=255)
        body = (x0, 0.4 * t, x1, 0.93 * t)
    else:  # pouch: trapezoid with a crimped top seal
        x0, x1, y0 = cx - 0.3 * t, cx + 0.3 * t, 0.12 * t
        md.polygon([(x0, y0), (x1, y0), (cx + 0.34 * t, 0.95 * t), (cx - 0.34 * t, 0.95 * t)], fill=255)
        teeth = 12
        md.polygon(
            [(x0 + (x1 - x0) * i / teeth, y0 - (0.025 * t if i % 2 else 0)) for i in range(teeth + 1)]
            + [(x1, y0 + 1), (x0, y0 + 1)],
            fill=255,
        )
        d.rectangle((0, 0, t, y0 + 0.05 * t), fill=dark)
        body = (x0, y0 + 0.06 * t, x1, 0.93 * t)
    bx0, by0, bx1, by1 = body
    bw, bh = bx1 - bx0, by1 - by0
    band = (by0 + 0.58 * bh, by0 + 0.84 * bh)
    d.rectangle((0, band[0], t, band[1]), fill=spec.accent_rgb)
    d.rectangle((0, by0 + 0.88 * bh, t, by0 + 0.92 * bh), fill=spec.logo_rgb)
    _text(rgb, (bx0 + 0.06 * bw, by0 + 0.03 * bh, bx1 - 0.06 * bw, by0 + 0.24 * bh), spec.brand, spec.text_rgb)
    _logo(d, spec.logo, (bx0 + bx1) / 2, by0 + 0.41 * bh, min(0.3 * bw, 0.14 * bh), spec.logo_rgb, spec.text_rgb)
    _text(
        rgb,
        (bx0 + 0.07 * bw, band[0] + 0.1 * (band[1] - band[0]), bx1 - 0.07 * bw, band[1] - 0.1 * (band[1] - band[0])),
        spec.variant,
        _ink(spec.accent_rgb),
    )
    if spec.shape == "bottle":
        d.rectangle((0, 0, t, 0.12 * t), fill=_ink(spec.base_rgb))  # cap
    if spec.shape == "can":
        d.rectangle((0, 0, t, 0.1 * t + 0.05 * t), fill=(190, 192, 198))
        d.rectangle((0, 0.9 * t - 0.05 * t, t, t), fill=(150, 152, 158))
    # shading: cylinders get a curved profile + specular stripe, boxes a dark side / light top
    u = np.clip((np.arange(t, dtype=np.float32) + 0.5 - cx) / (0.5 * (bx1 - bx0) + 1e-6), -1, 1)
    if spec.shape == "box":
        shade = np.where(np.arange(t) >= bx1, 0.6, 1.0).astype(np.float32)[None, :]
        shade = np.where(np.arange(t)[:, None] < by0, 1.25, shade)
    else:
        shade = (0.62 + 0.38 * np.sqrt(1 - u * u) + 0.35 * np.exp(-(((u + 0.45) / 0.12) ** 2)))[None, :]
    arr = np.asarray(rgb, dtype=np.float32) * shade[..., None]
    return Image.merge("RGBA", (*Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).split(), mask))


_PKG_CACHE: OrderedDict = OrderedDict()
_PKG_CACHE_PIXELS = 48_000_000  # ~190 MB of RGBA templates per process


def _package(spec: SKUSpec, t: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Cached (template, alpha bbox) for spec at t x t."""
    key = (spec, t)
    if key in _PKG_CACHE:
        _PKG_CACHE.move_to_end(key)
        return _PKG_CACHE[key]
    ss = 2 if t <= 384 else 1  # supersample small templates so edges and text stay clean
    im = _draw_package(spec, t * ss)
    if ss > 1:
        im = im.resize((t, t), Image.Resampling.LANCZOS)
    _PKG_CACHE[key] = im, im.getchannel("A").getbbox() or (0, 0, t, t)
    while sum(k[1] ** 2 for k in _PKG_CACHE) > _PKG_CACHE_PIXELS and len(_PKG_CACHE) > 1:
        _PKG_CACHE.popitem(last=False)
    return _PKG_CACHE[key]


def _background(rng: np.random.Generator, s: int) -> Image.Image:
    """Out-of-focus shelf: colour gradient + blurred blobs, drawn small then upscaled."""
    bs = max(8, s // 3)
    grid = rng.integers(30, 235, (3, 3, 3), dtype=np.uint8)
    bg = Image.fromarray(grid, "RGB").resize((bs, bs), Image.Resampling.BILINEAR)
    d = ImageDraw.Draw(bg)
    for _ in range(int(rng.integers(3, 9))):
        x, y = rng.uniform(-0.2, 1.0, 2) * bs
        w, h = rng.uniform(0.1, 0.5, 2) * bs
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        (d.rectangle if rng.random() < 0.6 else d.ellipse)((x, y, x + w, y + h), fill=col)
    if rng.random() < 0.6:  # shelf edge
        y = rng.uniform(0.5, 0.95) * bs
        d.rectangle((0, y, bs, y + bs * 0.06), fill=tuple(int(c) for c in rng.integers(120, 256, 3)))
    return bg.filter(ImageFilter.BoxBlur(1)).resize((s, s), Image.Resampling.BILINEAR)


def _perspective_coeffs(out_pts: np.ndarray, in_pts: np.ndarray) -> tuple[float, ...]:
    a, b = [], []
    for (x, y), (u, v) in zip(out_pts, in_pts):
        a += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        b += [u, v]
    return tuple(float(c) for c in np.linalg.solve(np.array(a), np.array(b)))


def _occlude(img: Image.Image, rng: np.random.Generator) -> None:
    """A price tag / other item or a hand entering from an edge; bounding box <= 22% of area."""
    s = img.width
    frac = rng.uniform(0.05, 0.22)  # of the image area
    w = min(s, s * math.sqrt(frac * rng.uniform(0.6, 1.6)))
    h = frac * s * s / w
    mask, x = Image.new("L", (s, s), 0), rng.uniform(0, s - w)
    d = ImageDraw.Draw(mask)
    if rng.random() < 0.5:
        d.rounded_rectangle((x, s - h, x + w, s), radius=0.1 * min(w, h), fill=255)
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
    else:  # hand: palm + four fingers pointing into the image
        d.ellipse((x, s - 0.55 * h, x + w, s + 0.4 * h), fill=255)
        for i in range(4):
            fx = x + w * (0.08 + 0.22 * i)
            d.rounded_rectangle(
                (fx, s - h * rng.uniform(0.75, 1.0), fx + 0.18 * w, s - 0.3 * h), radius=0.09 * w, fill=255
            )
        tone = rng.uniform(0.35, 1.0)
        col = (int(90 + 150 * tone), int(60 + 130 * tone), int(40 + 110 * tone))
    turn = int(rng.integers(4))  # which edge it comes from
    if turn:
        mask = mask.transpose(
            (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)[turn]
        )
    img.paste(col, (0, 0, s, s), mask)


def _damp(value, centre: float, j: float):
    """``value`` pulled towards ``centre`` by factor ``j`` (1: unchanged, bit for bit)."""
    return value if j == 1.0 else centre + (value - centre) * j


def render_view(spec: SKUSpec, seed: int, index: int, size: int = 128, views: str = "shelf") -> Image.Image:
    """One camera view of `spec`: RGB, size x size, a pure function of (seed, spec, index, size, views)."""
    _check("size", size, 16, "render at least 16x16 pixels")
    if views not in VIEWS:
        raise ValueError(f"views must be one of {', '.join(VIEWS)}, got {views!r}")
    rng = np.random.default_rng(_h("view", seed, spec.sku_id, index))
    s, studio = size, views == "studio"
    j = STUDIO_JITTER if studio else 1.0  # same random draws as a shelf view, scaled down
    img = Image.new("RGB", (s, s), (232, 232, 228)) if studio else _background(rng, s)
    pkg, (left, t, r, b) = _package(spec, s)
    ang = math.radians(rng.uniform(-25, 25) * j)
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    src = np.array([[left, t], [r, t], [r, b], [left, b]], dtype=np.float64)  # package bbox corners
    scale = _damp(rng.uniform(0.72, 1.0), 0.86, j)
    dst = (src - s / 2) @ rot.T * scale + s / 2 + rng.uniform(-0.1, 0.1, 2) * s * j
    dst += rng.uniform(-0.05, 0.05, (4, 2)) * s * j  # perspective: jitter each corner
    x0, y0 = np.clip(np.floor(dst.min(0)), 0, s - 1).astype(int)  # warp only the package's bbox
    x1, y1 = np.clip(np.ceil(dst.max(0)), x0 + 1, s).astype(int)
    warped = pkg.transform(
        (int(x1 - x0), int(y1 - y0)),
        Image.Transform.PERSPECTIVE,
        _perspective_coeffs(dst - (x0, y0), src),
        Image.Resampling.BILINEAR,
    )
    alpha = warped.getchannel("A")
    off = int(rng.integers(1, max(2, s // 40) + 1))  # soft contact shadow
    img.paste(
        (15, 15, 20), (int(x0) + off, int(y0) + off, int(x1) + off, int(y1) + off), alpha.point(lambda v: v * 0.45)
    )
    img.paste(warped, (int(x0), int(y0)), alpha)
    if rng.random() < 0.4 and not studio:
        _occlude(img, rng)
    gain = _damp(rng.uniform(0.85, 1.15, 3) * rng.uniform(0.7, 1.25), 1.0, j)  # colour cast x brightness
    contrast, x = _damp(rng.uniform(0.7, 1.2), 1.0, j), np.arange(256, dtype=np.float32)
    lut = np.concatenate([np.clip(((x - 128) * contrast + 128) * g, 0, 255) for g in gain])
    img = img.point(lut.astype(np.uint8).tolist())
    if rng.random() < 0.5 and not studio:  # defocus; big radii via down/up-sampling, ~3x cheaper than filtering
        radius = rng.uniform(0.25, 1.2) * s / 128
        k = int(radius // 1.5)
        img = (
            img.reduce(k).resize((s, s), Image.Resampling.BILINEAR)
            if k >= 2
            else img.filter(ImageFilter.BoxBlur(radius))
        )
    amp = int(rng.integers(2, 11)) if not studio else 2  # sensor noise, uniform in [-amp, amp], same on all channels
    noise = Image.fromarray(rng.integers(128 - amp, 129 + amp, (s, s), dtype=np.uint8), "L")
    return ImageChops.add(img, Image.merge("RGB", (noise, noise, noise)), 1.0, -128)


def _write_chunk(job) -> int:
    spec, seed, start, stop, size, quality, out_dir, views = job
    d = pathlib.Path(out_dir) / spec.sku_id
    d.mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        render_view(spec, seed, i, size, views).save(d / f"{i}.jpg", "JPEG", quality=quality)
    return stop - start


def write_catalogue(
    out_dir,
    num_skus: int,
    images_per_sku: int,
    size: int = 128,
    seed: int = 0,
    workers: int = 1,
    quality: int = 90,
    progress: bool = True,
    views: str = "shelf",
) -> pathlib.Path:
    """Writes out_dir/<sku_id>/<n>.jpg and out_dir/catalogue.csv (path,sku_id,brand,category).

    ``views``: "shelf" (in-store camera views) or "studio" (one rig shot per SKU, slightly varied).
    """
    _check("num_skus", num_skus, 1, "ask for at least one SKU")
    _check("images_per_sku", images_per_sku, 1, "ask for at least one image per SKU")
    _check("size", size, 16, "render at least 16x16 pixels")
    _check("workers", workers, 1, "use 1 for in-process rendering")
    _check("quality", quality, 1, "pass a JPEG quality such as 90", hi=100)
    if views not in VIEWS:
        raise ValueError(f"views must be one of {', '.join(VIEWS)}, got {views!r}")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = make_catalogue(num_skus, seed)
    step = 64  # per-SKU chunks keep each worker's package cache hot
    jobs = [
        (sp, seed, a, min(a + step, images_per_sku), size, quality, str(out), views)
        for sp in specs
        for a in range(0, images_per_sku, step)
    ]

    with tqdm(total=num_skus * images_per_sku, unit="img", desc="synthetic", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                bar.update(_write_chunk(job))
        else:  # spawn: safe even when the parent already runs torch / OpenMP threads
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as ex:
                for fut in as_completed([ex.submit(_write_chunk, j) for j in jobs]):
                    bar.update(fut.result())
    csv_path = out / "catalogue.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "sku_id", "brand", "category"])
        for sp in specs:
            w.writerows([f"{sp.sku_id}/{i}.jpg", sp.sku_id, sp.brand, sp.category] for i in range(images_per_sku))
    return csv_path
