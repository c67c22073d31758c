"""How many nodes and devices per node the Trainer gets: ``auto`` means "what the cluster has".

``trainer.devices`` / ``trainer.num_nodes`` set to ``auto`` (``trainer=smddp``,
``trainer=ddp``) take their numbers from where the ranks were started, so a
SageMaker job never repeats its instance count and GPU count in the config:

- SageMaker (``SM_HOSTS``): nodes = hosts in ``SM_HOSTS``, devices = ranks per
  host (the launcher's world size / hosts, i.e. ``SM_NUM_GPUS`` on SMDDP jobs);
- torchrun: nodes = ``GROUP_WORLD_SIZE``, devices = ``LOCAL_WORLD_SIZE``;
- anywhere else: one node, Lightning's ``devices="auto"``.

Explicit numbers are kept, and checked against the launcher: devices x nodes
must equal the processes it started, or training would hang at rendezvous.

Ranks started by SageMaker's SMDDP launcher (mpirun: ``OMPI_COMM_WORLD_*``) with
``strategy: auto`` get :class:`SMDDPStrategy`: Lightning's own choice there would
not see the launcher and would start a second set of processes.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from skuvision.distributed.environment import SageMakerEnvironment, _env_int
from skuvision.distributed.strategy import SMDDPStrategy
from skuvision.errors import ConfigError

AUTO = ("auto", None)


def _count_devices(devices: Any) -> int | None:
    """Processes per node a ``devices`` value means, when it says so without asking the hardware."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices >= 0 else None
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if hasattr(devices, "__len__") and not isinstance(devices, str):  # ListConfig
        return len(devices)
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            return len([x for x in text.split(",") if x.strip()])
        if text.isdigit():
            return int(text)
    return None


def cluster_layout(trainer_cfg) -> dict[str, Any]:
    """``devices`` / ``num_nodes`` for ``Trainer(...)``, replacing ``auto`` and validating explicit values."""
    devices, num_nodes = trainer_cfg.get("devices", "auto"), trainer_cfg.get("num_nodes", 1)
    layout: dict[str, Any] = {}
    if SageMakerEnvironment.detect():
        env = SageMakerEnvironment()
        if num_nodes in AUTO:
            layout["num_nodes"] = env.num_hosts
        if devices in AUTO:
            layout["devices"] = env.processes_per_host()
        if (
            trainer_cfg.get("strategy", "auto") in AUTO
            and (_env_int("world_size") or 1) > 1
            and os.environ.get("OMPI_COMM_WORLD_SIZE")
            and not os.environ.get("TORCHELASTIC_RUN_ID")
        ):
            layout["strategy"] = SMDDPStrategy()
    elif os.environ.get("TORCHELASTIC_RUN_ID"):
        if num_nodes in AUTO:
            layout["num_nodes"] = int(os.environ.get("GROUP_WORLD_SIZE") or 1)
        if devices in AUTO and os.environ.get("LOCAL_WORLD_SIZE"):
            layout["devices"] = int(os.environ["LOCAL_WORLD_SIZE"])
    elif num_nodes in AUTO:
        layout["num_nodes"] = 1
    _check_against_launcher(_count_devices(layout.get("devices", devices)), layout.get("num_nodes", num_nodes))
    if _is_smddp(layout.get("strategy", trainer_cfg.get("strategy"))):
        # torch.no_grad for val/test instead of inference_mode: on torch 2.4 (the SageMaker image) a collective
        # of a backend registered through Backend.register_backend, as SMDDP is, writes into its result
        # tensors outside inference mode and fails ("Inplace update to inference tensor outside InferenceMode")
        layout["inference_mode"] = False
    return layout


def _is_smddp(strategy: Any) -> bool:
    if isinstance(strategy, SMDDPStrategy) or strategy == "smddp":
        return True
    target = strategy.get("_target_", "") if hasattr(strategy, "get") else ""
    return str(target).rsplit(".", 1)[-1] == "SMDDPStrategy"


def _check_against_launcher(devices: int | None, num_nodes: Any) -> None:
    if devices is None or not isinstance(num_nodes, int):
        return
    if SageMakerEnvironment.detect():
        SageMakerEnvironment().validate_settings(devices, num_nodes)
        return
    world = _env_int("world_size")
    if world is not None and devices * num_nodes != world:
        raise ConfigError(
            f"trainer.devices={devices} x trainer.num_nodes={num_nodes} = {devices * num_nodes} processes, but the "
            f"launcher started {world} (WORLD_SIZE); set trainer.devices=auto trainer.num_nodes=auto or match the launcher"
        )


def local_process_count(trainer_cfg) -> int:
    """Ranks one local DDP run of this trainer config starts (devices on this machine)."""
    devices = trainer_cfg.get("devices", "auto")
    count = _count_devices(devices)
    if count is not None:
        return count
    accelerator = str(trainer_cfg.get("accelerator", "auto")).lower()
    if accelerator in ("auto", "gpu", "cuda"):
        if torch.cuda.is_available():
            return torch.cuda.device_count()
    return 1
