"""DDP over the SageMaker distributed data parallel library (SMDDP), with a fallback.

SMDDP is a c10d backend, so this is Lightning's ``DDPStrategy`` with process group backend
``smddp``. The library is imported only when the process group is set up (it refuses to load off
AWS GPU instances); without it ``fallback`` picks NCCL/gloo or stops, so one experiment runs on a
laptop, a GPU box and a p4d cluster. SMDDP has no sub-groups and mixes with no other backend, so
the two Lightning defaults that need them are replaced: the ``prepare_data`` barrier (a gloo
sub-group there, the world group here) and mean-reductions (SUM then divide: gloo has no AVG).
"""

from __future__ import annotations

import atexit
import functools
import importlib
import logging
from typing import Any

import torch
from lightning.fabric.utilities.distributed import _distributed_is_initialized, _sync_ddp
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer import call
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from skuvision.distributed.environment import SageMakerEnvironment
from skuvision.errors import ConfigError

log = logging.getLogger(__name__)

SMDDP_BACKEND = "smddp"
SMDDP_MODULE = "smdistributed.dataparallel.torch.torch_smddp"
FALLBACKS = ("auto", "nccl", "gloo", "error")


def smddp_unavailable_reason() -> str | None:
    """None when SMDDP loaded (its backend is registered), else why not."""
    try:
        importlib.import_module(SMDDP_MODULE)
    except ImportError as exc:
        return f"{SMDDP_MODULE} is not installed ({exc})"
    except Exception as exc:  # the real library raises when it is not on a supported AWS instance
        return f"{SMDDP_MODULE} failed to load: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def resolve_backend(fallback: str, device: torch.device) -> str:
    """The process group backend to use: ``smddp`` if it loads, else what ``fallback`` says."""
    reason = smddp_unavailable_reason()
    if reason is None:
        return SMDDP_BACKEND
    if fallback == "error":
        raise ConfigError(
            f"SMDDP is not available: {reason}; run on ml.p4d/p4de with the SMDDP training image, "
            "or set trainer.strategy.fallback=auto to train over NCCL/gloo"
        )
    backend = ("nccl" if device.type == "cuda" else "gloo") if fallback == "auto" else fallback
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError(
            f"trainer.strategy.fallback=nccl needs GPUs but this rank runs on {device.type}; use auto or gloo"
        )
    rank_zero_warn(f"SMDDP unavailable ({reason}); using the {backend} backend (trainer.strategy.fallback={fallback})")
    return backend


def _prepare_data_on_world_group(trainer, strategy: DDPStrategy) -> None:
    """Lightning's ``prepare_data`` step with a world-group barrier instead of its gloo sub-group."""
    local_zero = trainer.local_rank == 0
    global_zero = local_zero and trainer.node_rank == 0
    for owner, hook in (
        (trainer.datamodule, call._call_lightning_datamodule_hook),
        (trainer.lightning_module, call._call_lightning_module_hook),
    ):
        if owner is not None and is_overridden("prepare_data", owner):
            if (owner.prepare_data_per_node and local_zero) or (not owner.prepare_data_per_node and global_zero):
                hook(trainer, "prepare_data")
            strategy.barrier("prepare_data")


class SMDDPStrategy(DDPStrategy):
    """Lightning DDP with ``process_group_backend="smddp"`` and a fallback when SMDDP is absent.

    On SageMaker (``SM_HOSTS`` set) it uses :class:`SageMakerEnvironment` unless a
    cluster environment is given. Other keyword arguments go to ``DDPStrategy``
    (e.g. ``gradient_as_bucket_view``, ``static_graph``, ``timeout``).
    """

    strategy_name = "smddp"

    def __init__(self, fallback: str = "auto", cluster_environment=None, **kwargs: Any) -> None:
        if fallback not in FALLBACKS:
            raise ConfigError(f"trainer.strategy.fallback={fallback}: use one of {', '.join(FALLBACKS)}")
        backend = kwargs.pop("process_group_backend", None)
        if backend not in (None, SMDDP_BACKEND):
            raise ConfigError(f"SMDDPStrategy: process_group_backend={backend}; for other backends use trainer=ddp")
        if kwargs.get("start_method", "popen") != "popen":
            raise ConfigError(
                "SMDDPStrategy: processes are started by the launcher (torchrun, mpirun); start_method must be popen"
            )
        if cluster_environment is None and SageMakerEnvironment.detect():
            cluster_environment = SageMakerEnvironment()
        super().__init__(cluster_environment=cluster_environment, process_group_backend=SMDDP_BACKEND, **kwargs)
        self.fallback = fallback

    def _get_process_group_backend(self) -> str:
        if self._process_group_backend == SMDDP_BACKEND:  # not resolved yet in this process
            return resolve_backend(self.fallback, self.root_device)
        return self._process_group_backend or super()._get_process_group_backend()

    def setup_distributed(self) -> None:
        super().setup_distributed()
        if self._process_group_backend == SMDDP_BACKEND:
            atexit.register(_destroy_process_group)  # as Lightning does for NCCL: no undestroyed-group warnings
        log.debug(
            "process group backend: %s", torch.distributed.get_backend() if _distributed_is_initialized() else None
        )

    def setup_environment(self) -> None:
        super().setup_environment()
        trainer = getattr(self.lightning_module, "_trainer", None) if self.lightning_module is not None else None
        if trainer is not None:
            trainer._data_connector.prepare_data = functools.partial(_prepare_data_on_world_group, trainer, self)

    def reduce(self, tensor: Any, group: Any | None = None, reduce_op: Any = "mean") -> Any:
        """Mean = SUM / world size on every backend (gloo has no AVG; SUM is the op every backend has)."""
        if (
            isinstance(tensor, torch.Tensor)
            and isinstance(reduce_op, str)
            and reduce_op.lower() in ("mean", "avg")
            and _distributed_is_initialized()
        ):
            _sync_ddp(tensor, group, reduce_op="sum")
            world = torch.distributed.get_world_size(group)
            return tensor.div_(world) if torch.is_floating_point(tensor) else tensor.copy_(tensor / world)
        return super().reduce(tensor, group=group, reduce_op=reduce_op)

    @classmethod
    def register_strategies(cls, strategy_registry) -> None:
        if SMDDP_BACKEND not in strategy_registry:
            strategy_registry.register(
                SMDDP_BACKEND,
                cls,
                description="DDP over SageMaker's SMDDP backend (NCCL/gloo fallback with a warning)",
                fallback="auto",
            )
