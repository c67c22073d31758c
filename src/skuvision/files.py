"""Files that are either the old version or the new one, never half of either.

A run killed mid-write (spot interruption, OOM, Ctrl-C) must not leave a truncated manifest,
metrics.json or weights file that the next command then trusts: write beside the target, then
``os.replace`` (atomic on POSIX within one file system).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, value: Any, **dumps: Any) -> Path:
    """``json.dumps(value, **dumps)`` into ``path`` atomically (indent=2 unless given)."""
    dumps.setdefault("indent", 2)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, **dumps))
    return Path(path)


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MB blocks (chunks and checkpoints are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def out_of_room(exc: BaseException | None) -> OSError | None:
    """The full-disk / quota / file-size error under ``exc`` (torch.save wraps it in a RuntimeError)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
