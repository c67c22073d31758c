"""Stand-in for ``smdistributed.dataparallel.torch.torch_smddp`` (SMDDP 2.x) for tests off AWS.

Importing the real module registers a c10d backend named ``smddp``; this one
registers the same name on top of gloo, so ``init_process_group("smddp")``,
DDP and ``torch.distributed.get_backend() == "smddp"`` behave as they would on a
p4d, only over CPU sockets. It also enforces SMDDP's documented limit: no
sub-groups (``torch.distributed.new_group``) while an ``smddp`` world group is
up, so a test run proves nothing in the stack creates one.
Uses only ``Backend.register_backend(name, func, extended_api, devices)``,
which torch 2.4 (the SageMaker image's torch) already has.
"""

from __future__ import annotations

import torch.distributed as dist
from torch.distributed import distributed_c10d

BACKEND = "smddp"


def _create_backend(store, rank: int, size: int, timeout):
    return dist.ProcessGroupGloo(store, rank, size, timeout)


if BACKEND.upper() not in dist.Backend._plugins:
    dist.Backend.register_backend(BACKEND, _create_backend, extended_api=False, devices=["cpu", "cuda"])

_original_new_group = distributed_c10d.new_group


def _new_group(*args, **kwargs):
    if dist.is_initialized() and dist.get_backend() == BACKEND:
        raise RuntimeError("smddp backend does not support sub-groups: torch.distributed.new_group() was called")
    return _original_new_group(*args, **kwargs)


if getattr(distributed_c10d.new_group, "__name__", "") != "_new_group":
    distributed_c10d.new_group = _new_group
    dist.new_group = _new_group
