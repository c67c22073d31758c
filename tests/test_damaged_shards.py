"""Shards damaged after the build, met at train time: one line naming the file and the remedy.

Real shards (the session's tiny build) copied and damaged on disk the way storage and people
damage them; the real CLI trains on them.
"""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import QUIET, TINY_MODEL, one_error_line, run_cli

RUN = [*TINY_MODEL, "data.batch_size=4", "data.num_workers=0", "trainer.max_epochs=1", *QUIET]


@pytest.fixture
def shards(tiny_shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(tiny_shards, copy)
    return copy


def train(shards, run_dir, *extra):
    return run_cli("train.py", f"hydra.run.dir={run_dir}", f"data.root={shards}", *RUN, *extra)


def _truncate(shards):
    chunk = shards / "train" / "chunk-0-0.bin"
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])


def _foreign(shards):  # a chunk of another build (here: another split's) copied over this one
    shutil.copyfile(shards / "val" / "chunk-0-0.bin", shards / "train" / "chunk-0-0.bin")


@pytest.mark.parametrize("damage", [_truncate, _foreign], ids=["truncated", "from-another-build"])
def test_a_damaged_chunk_stops_before_the_first_step_naming_it_and_the_remedy(shards, tmp_path, damage):
    damage(shards)
    line = one_error_line(train(shards, tmp_path / "run"), other_output=True)
    assert f"{shards}/train/chunk-0-0.bin" in line and "skuvision shards verify" in line, line
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_a_manifest_from_a_newer_format_says_upgrade_or_rebuild(shards, tmp_path):
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["format_version"] += 1
    (shards / "manifest.json").write_text(json.dumps(manifest))
    line = one_error_line(train(shards, tmp_path / "run"), other_output=True)
    assert "manifest.json" in line and "newer" in line and "upgrade skuvision" in line, line


def _break_first_image(shards) -> None:
    """The first sample's JPEG start marker zeroed: same chunk size, the image no longer decodes."""
    chunk = shards / "train" / "chunk-0-0.bin"
    data = bytearray(chunk.read_bytes())
    at = bytes(data).index(b"\xff\xd8\xff")
    data[at : at + 3] = b"\x00\x00\x00"
    chunk.write_bytes(bytes(data))


def test_an_image_that_no_longer_decodes_stops_the_run_by_default_naming_chunk_and_sample(shards, tmp_path):
    _break_first_image(shards)
    line = one_error_line(train(shards, tmp_path / "run"), other_output=True)
    assert f"{shards}/train/chunk-0-0.bin sample 0" in line and "does not decode" in line, line
    assert "data.max_bad_samples=0" in line and "skuvision shards verify" in line, line


def test_with_max_bad_samples_the_image_is_skipped_and_counted_in_metrics(shards, tmp_path):
    _break_first_image(shards)
    result = train(shards, tmp_path / "run", "data.max_bad_samples=1")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data/bad_samples"] == 1


def test_shards_verify_finds_a_flipped_bit_that_still_decodes_by_the_chunk_hash(shards):
    """The damage no per-sample check sees: one bit deep in a JPEG's entropy data, the image still decodes."""
    from skuvision.data.imageio import decode_to_tensor
    from skuvision.data.shard_verify import verify_shards

    assert verify_shards(shards, progress=False) == []  # as built: every chunk matches its recorded sha256
    chunk = shards / "train" / "chunk-0-0.bin"
    data = bytearray(chunk.read_bytes())
    soi = bytes(data).index(b"\xff\xd8\xff")  # the first sample's JPEG
    sos = bytes(data).index(b"\xff\xda", soi)  # start of scan: entropy-coded pixels follow
    eoi = bytes(data).index(b"\xff\xd9", sos) + 2
    flipped = None
    for at in range(sos + 40, eoi - 10, 7):  # the first flip that keeps the JPEG decodable
        trial = bytearray(data[soi:eoi])
        trial[at - soi] ^= 0x10
        try:
            decode_to_tensor(bytes(trial))
        except RuntimeError:
            continue
        flipped = at
        break
    assert flipped is not None
    data[flipped] ^= 0x10
    chunk.write_bytes(bytes(data))

    problems = verify_shards(shards, progress=False)
    assert problems == [
        f"{chunk}: sha256 is not the build's (changed after the build: flipped bits, a partial copy, or another build's chunk)"
    ]
    result = run_cli("-m", "skuvision.cli", "shards", "verify", str(shards), "--quiet")
    assert result.returncode == 1 and f"MISMATCH {chunk}: sha256" in result.stderr
