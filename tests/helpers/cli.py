"""Commands as a user runs them (a subprocess), and the one-line error every bad input must end in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers.configs import ROOT

TESTS = ROOT / "tests"


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def shards_build_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """``skuvision shards build ARGS...`` as a user runs it, in a subprocess."""
    return run_cli("-m", "skuvision.cli", "shards", "build", *args, **kwargs)


def one_error_line(result, info: tuple[str, ...] = (), other_output: bool = False) -> str:
    """The one ``skuvision: error: `` line of a run that exited 2 without a traceback.

    By default it is stderr's only non-blank line; ``info``: prefixes of other lines allowed;
    ``other_output=True``: any other lines allowed (log output of a run that got going first).
    """
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("skuvision: error:")]
    assert len(errors) == 1 and errors[0].startswith("skuvision: error: "), result.stderr[-3000:]
    if not other_output:
        others = [line for line in lines if line != errors[0] and not line.startswith(info or "\0")]
        assert not others, result.stderr[-3000:]
    return errors[0]


def subprocess_pythonpath(*first: Path) -> str:
    """PYTHONPATH for a process a test starts: ``first`` (e.g. stubs), tests/ (``helpers.*`` callbacks)
    and this checkout's src/, so the process runs this tree's skuvision, not whichever one is installed."""
    return os.pathsep.join(str(p) for p in (*first, TESTS, ROOT / "src"))
