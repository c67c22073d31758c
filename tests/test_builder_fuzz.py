"""Fuzzing the shard builder (issue 14, item 7): damaged and random files never crash a build.

From three small valid seeds (RGB JPEG, RGBA PNG, palette GIF) hypothesis makes files by random
bytes, truncation at a random offset, random bit flips and a valid header followed by garbage,
spreads them over two SKUs next to one good photo each (so a build always has training data), and
runs the real builder. Whatever the files, the build finishes (or stops with a DataError), and
every input file is in the shards or in rejects.csv, exactly once: sharded + rejected = inputs.

The fast suite runs a fixed set of examples (``derandomize``); ``SKUVISION_FUZZ_EXAMPLES=2000``
runs that many fresh random ones.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from skuvision.data.manifest import read_manifest
from skuvision.data.shards import BuildSettings, build_shards
from skuvision.errors import DataError

EXAMPLES = int(os.environ.get("SKUVISION_FUZZ_EXAMPLES", "0"))


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 255, 32, dtype=np.uint8)
    rgb = np.stack([np.tile(ramp, (32, 1)), np.tile(ramp[:, None], (1, 32)), rng.integers(0, 256, (32, 32))], -1)
    rgba = Image.fromarray(rng.integers(0, 256, (24, 24, 4), dtype=np.uint8), "RGBA")
    palette = Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).convert("P")
    return [
        _encode(Image.fromarray(rgb.astype(np.uint8)), "JPEG", quality=85),
        _encode(rgba, "PNG"),
        _encode(palette, "GIF"),
    ]


SEEDS = _seeds()
ANCHORS = [  # one good photo per SKU, never touched by the fuzzer
    _encode(Image.fromarray(np.random.default_rng(100 + i).integers(0, 256, (32, 32, 3), dtype=np.uint8)), "JPEG")
    for i in range(2)
]

seed = st.sampled_from(SEEDS)
random_bytes = st.binary(max_size=3000)
truncated = st.builds(lambda data, frac: data[: int(len(data) * frac)], seed, st.floats(0, 1))
flipped = st.builds(
    lambda data, flips: _flip(data, flips),
    seed,
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=12),
)
header_then_garbage = st.builds(
    lambda data, frac, tail: data[: max(1, int(len(data) * frac))] + tail,
    seed,
    st.floats(0, 0.5),
    st.binary(max_size=500),
)
fuzzed_file = st.one_of(random_bytes, truncated, flipped, header_then_garbage, seed)


def _flip(data: bytes, flips: list[tuple[float, int]]) -> bytes:
    out = bytearray(data)
    for where, bit in flips:
        out[int(where * len(out))] ^= 1 << bit
    return bytes(out)


def _write_tree(root: Path, files: list[tuple[bytes, int, str]]) -> list[Path]:
    inputs = []
    for sku, anchor in zip("ab", ANCHORS):
        (root / sku).mkdir(parents=True)
        (root / sku / "anchor.jpg").write_bytes(anchor)
        inputs.append(root / sku / "anchor.jpg")
    for i, (data, sku, suffix) in enumerate(files):
        path = root / "ab"[sku] / f"f{i}{suffix}"
        path.write_bytes(data)
        inputs.append(path)
    return inputs


def _shard_keys(out: Path) -> list[str]:
    from litdata import StreamingDataset

    keys = []
    for info in read_manifest(out)["splits"].values():
        if info["count"]:
            ds = StreamingDataset(str(out / info["dir"]))
            keys += [ds[i]["key"] for i in range(len(ds))]
    return keys


@settings(
    max_examples=EXAMPLES or 40,
    derandomize=not EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    files=st.lists(
        st.tuples(fuzzed_file, st.integers(0, 1), st.sampled_from([".jpg", ".png", ".gif", ".webp"])),
        min_size=1,
        max_size=6,
    )
)
def test_fuzzed_files_are_sharded_or_rejected_never_a_crash(files):
    with tempfile.TemporaryDirectory(prefix="skuvision-fuzz-") as tmp:
        inputs = _write_tree(Path(tmp) / "in", files)
        out = Path(tmp) / "out"
        try:
            manifest = build_shards(Path(tmp) / "in", out, BuildSettings(size=16, val=0.0, test=0.0), progress=False)
        except DataError:  # a user error is an outcome; nothing else may come out of a build
            assert not (out / "manifest.json").exists()
            return
        with (out / "rejects.csv").open(newline="", encoding="utf-8") as fh:
            rejected = [row["path"] for row in csv.DictReader(fh)]
        sharded = sum(sum(c.values()) for c in manifest["per_sku"].values())
        assert len(rejected) == len(set(rejected)) == manifest["rejects"]
        assert set(rejected) <= {str(p) for p in inputs}
        assert sharded + len(rejected) == len(inputs)
        assert sharded == sum(i["count"] for i in manifest["splits"].values())
        # and the shards hold exactly the files that were not rejected, each once
        kept = sorted(hashlib.sha1(p.read_bytes()).hexdigest() for p in inputs if str(p) not in set(rejected))
        assert sorted(_shard_keys(out)) == kept
