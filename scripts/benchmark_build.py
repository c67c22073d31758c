"""Where a shard build's time goes, per core, on 1000 px JPEG originals (issue 20's "speed per core").

Renders (and caches) synthetic 1000x1000 q95 originals, then prints markdown for BENCHMARKS.md:
CPU milliseconds per original for each stage of ``prepare_image`` on one core, and end-to-end
originals per CPU-second of a one-machine build, a 2-process build and a 2-partition build + merge.
CPU time, not wall time: this machine is shared, and CPU seconds per original is what a per-core
projection needs.

    python scripts/benchmark_build.py [--skus 8 --images-per-sku 8] [--data-dir data/benchmark]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import platform
import resource
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import imagehash
from PIL import Image

from skuvision.data.build_settings import BuildSettings
from skuvision.data.imageio import decode_resized, prepare_image, to_rgb, upright
from skuvision.data.partition_merge import merge_partitions
from skuvision.data.partitions import build_partition
from skuvision.data.shards import build_shards
from skuvision.data.synthetic import write_catalogue

ROOT = Path(__file__).resolve().parents[1]
SIZE = 320


def cpu_ms(fn, items, passes: int = 5) -> float:
    """CPU ms per item, the fastest of ``passes`` passes (load on a shared machine only adds)."""
    best = float("inf")
    for _ in range(passes):
        start = time.process_time()
        for item in items:
            fn(item)
        best = min(best, (time.process_time() - start) / len(items) * 1000)
    return best


def draft_decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (SIZE, SIZE))
    img.load()
    return img


def encode(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def stage_rows(files: list[Path]) -> list[tuple[str, float]]:
    datas = [f.read_bytes() for f in files]
    drafted = [draft_decode(d) for d in datas]
    small = [decode_resized(d, SIZE) for d in datas]
    rows = [
        ("read the file", cpu_ms(lambda f: f.read_bytes(), files)),
        ("sha1 of the original (split, dedup)", cpu_ms(lambda d: hashlib.sha1(d).hexdigest(), datas)),
        ("JPEG decode, full size (for comparison)", cpu_ms(lambda d: Image.open(io.BytesIO(d)).load(), datas)),
        ("JPEG decode, draft 1/2 (what the build does)", cpu_ms(draft_decode, datas)),
        ("upright + RGB", cpu_ms(lambda im: to_rgb(upright(im)), drafted)),
        (
            f"resize to {SIZE} (bilinear)",
            cpu_ms(lambda im: im.resize(small[0].size, Image.Resampling.BILINEAR), drafted),
        ),
        ("pHash of the resized image", cpu_ms(imagehash.phash, small)),
        ("JPEG encode q90", cpu_ms(encode, small)),
        ("prepare_image, all of the above but the read", cpu_ms(lambda d: prepare_image(d, SIZE, 90), datas)),
    ]
    return rows


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn) -> tuple[float, float]:
    cpu, wall = cpu_seconds(), time.perf_counter()
    fn()
    return cpu_seconds() - cpu, time.perf_counter() - wall


def end_to_end_rows(originals: Path, work: Path, count: int) -> list[tuple[str, float, float]]:
    def fresh(name: str) -> Path:
        shutil.rmtree(work / name, ignore_errors=True)
        return work / name

    settings = dict(size=SIZE)
    rows = []
    for workers in (1, 2):
        out = fresh(f"w{workers}")
        cpu, wall = timed(
            lambda out=out, workers=workers: build_shards(
                originals, out, BuildSettings(workers=workers, **settings), progress=False
            )
        )
        rows.append((f"one-machine build, {workers} process(es)", cpu, wall))
    out = fresh("p2")
    cpu, wall = timed(
        lambda: [build_partition(originals, out, BuildSettings(**settings), 2, k, progress=False) for k in (0, 1)]
    )
    rows.append(("2 partitions, one after the other", cpu, wall))
    cpu, wall = timed(lambda: merge_partitions(out, progress=False))
    rows.append(("their merge", cpu, wall))
    return [(name, count / cpu, count / wall) for name, cpu, wall in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skus", type=int, default=8)
    p.add_argument("--images-per-sku", type=int, default=8)
    p.add_argument("--data-dir", default=str(ROOT / "data" / "benchmark"))
    args = p.parse_args()
    originals = Path(args.data_dir) / f"build-originals-{args.skus}x{args.images_per_sku}-1000px-q95"
    if not (originals / "catalogue.csv").is_file():
        write_catalogue(originals, args.skus, args.images_per_sku, size=1000, quality=95, progress=False)
    files = sorted(originals.glob("*/*.jpg"))
    kb = sum(f.stat().st_size for f in files) / len(files) / 1024
    print(
        f"`python scripts/benchmark_build.py` — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"Python {platform.python_version()}, Pillow {Image.__version__}. {len(files)} synthetic 1000×1000 JPEG q95 "
        f"originals ({kb:.0f} KB on average), `--size {SIZE}`.\n"
    )
    print("Per original on one core (CPU ms, fastest of 5 passes over 40 originals):\n\n| stage | CPU ms |\n|---|---|")
    for name, ms in stage_rows(files[:40]):
        print(f"| {name} | {ms:.2f} |")
    print("\nEnd to end (originals per CPU-second, all processes; and per wall second on this shared machine):\n")
    print("| build | originals / CPU-s | originals / s (wall) |\n|---|---|---|")
    for name, per_cpu, per_wall in end_to_end_rows(originals, Path(args.data_dir) / "build-runs", len(files)):
        print(f"| {name} | {per_cpu:.0f} | {per_wall:.0f} |")


if __name__ == "__main__":
    main()
