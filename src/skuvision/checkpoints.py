"""Checkpoint files that are whole or absent, and finding the newest one that loads.

Lightning's ``TorchCheckpointIO`` serialises into memory, then opens the target with
truncation and writes: a job killed in that write (spot reclaim after the 120 s
notice, OOM killer, a full disk) leaves a truncated ``last.ckpt`` as the newest file,
and the restart fails on it or, worse, trusts it. :class:`AtomicCheckpointIO` writes
beside the target, flushes it to disk, then ``os.replace``-s it over the target, so a
reader sees the previous checkpoint or the new one, never part of one.

A torch checkpoint is a zip archive with a CRC per entry; :func:`loads` checks the
archive end to end (a truncated file has no central directory, a flipped bit fails a
CRC), which is what :func:`newest_loadable` uses to pick where a run resumes.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from skuvision.errors import ConfigError, StorageError
from skuvision.files import out_of_room

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are write-to-temp, fsync, ``os.replace``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if not _is_local_file_protocol(str(path)):  # s3:// etc.: the object store's put is already all-or-nothing
            return super().save_checkpoint(checkpoint, path, storage_options)

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except Exception as exc:
            full = out_of_room(exc)
            if full is None:
                raise
            raise StorageError(
                f"{path}: checkpoint not written ({full.strerror}); the previous {path.name}, if any, is whole; "
                f"free space in {path.parent} (or set callbacks.resume_checkpoint.dirpath and "
                "callbacks.model_checkpoint.dirpath elsewhere) and resume with ckpt_path=last"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)  # the rename itself survives a power cut


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def loads(path: str | Path) -> bool:
    """Whether ``path`` is a complete torch checkpoint archive (every entry's CRC checked)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def newest_loadable(directory: str | Path, preferred: str = "last.ckpt") -> Path | None:
    """The newest ``*.ckpt`` in ``directory`` that loads; ``preferred`` first when it does.

    ``last.ckpt`` is the newest state by construction (written after every epoch and on
    SIGTERM); should it not load (damaged after the fact, or from a version without
    atomic saves), the newest other checkpoint is the next best place to resume.
    """
    directory = Path(directory)
    first = directory / preferred
    if first.is_file() and loads(first):
        return first
    others = sorted(
        (p for p in directory.glob("*.ckpt") if p != first and p.is_file()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for candidate in others:
        if loads(candidate):
            if first.exists():
                log.warning("%s does not load (truncated or damaged); resuming from %s instead", first, candidate)
            return candidate
    if first.exists():
        log.warning("%s does not load (truncated or damaged), and no other checkpoint in %s does", first, directory)
    return None


def check_writable(directory: str | Path, key: str) -> None:
    """Fail now, with one line naming ``key``, if checkpoints could not be written to ``directory``.

    Without this a read-only or mistyped checkpoint dir is found after the first epoch
    (or the first spot notice), when the work is already spent.
    """
    if not _is_local_file_protocol(str(directory)):
        return
    directory = Path(directory)
    probe = directory / f".write_probe{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"{key}={directory}: checkpoints cannot be written there ({exc.strerror or exc}); "
            "point it at a writable directory"
        ) from None
