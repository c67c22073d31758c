"""Name a lost rank as such: gloo/NCCL errors read like bugs in the rank that survived.

When another rank dies (``kill -9``, the OOM killer, a lost host) or stalls past the strategy's
timeout, the survivors' next collective raises "Connection reset by peer", "Timed out waiting ...
ms" or an NCCL watchdog error, with a traceback through DDP internals. The run must stop (it
does, non-zero, in bounded time); this adds the one line that says what happened and what to do.
"""

from __future__ import annotations

# what gloo, NCCL and torch's c10d say when a peer is gone or silent
_LOST_PEER = (
    "Connection reset by peer",
    "Connection closed by peer",
    "Broken pipe",
    "Timed out waiting",
    "Socket Timeout",
    "Watchdog caught collective operation timeout",
    "NCCL communicator was aborted",
    "remote process exited or there was a network error",
)


def lost_peer_message(exc: BaseException, rank: int, world_size: int) -> str | None:
    """One line for an error that means another rank died or stalled, else None."""
    if world_size < 2:
        return None
    text = str(exc)
    if type(exc).__name__ != "DistBackendError" and not any(marker in text for marker in _LOST_PEER):
        return None
    first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
    return (
        f"rank {rank} of {world_size} lost contact with another rank ({first}): a rank died or stalled "
        "(look for its exit or last lines above); this rank stops too. Resume with ckpt_path=last "
        "(ckpt_path=auto on SageMaker) once the cause is fixed"
    )
