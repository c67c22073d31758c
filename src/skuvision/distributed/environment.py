"""Where this process sits in a SageMaker training cluster, for Lightning.

SageMaker tells every container the job's hosts (``SM_HOSTS``, a JSON list,
identical and in the same order on every host) and which one it is
(``SM_CURRENT_HOST``). The ranks come from whichever launcher started the
processes: ``torch_distributed`` (torchrun) exports ``WORLD_SIZE``/``RANK``/
``LOCAL_RANK``; the SMDDP launcher (mpirun + smddprun) exports Open MPI's
``OMPI_COMM_WORLD_SIZE``/``_RANK``/``_LOCAL_RANK``. Lightning's own environments
each cover one of those and none knows the host list, so this one reads both
and takes the node rank from the host's position in ``SM_HOSTS``.

Processes are always created externally: by the launcher, or — on one host
with several GPUs and no launcher — by ``skuvision.entry.sagemaker_job``, which
then starts torchrun itself. Lightning never re-launches ``sys.argv`` here.
"""

from __future__ import annotations

import json
import logging
import os

from lightning.fabric.plugins.environments import ClusterEnvironment

from skuvision.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PORT = 7777
_RANK_VARS = {
    "world_size": ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE"),
    "rank": ("RANK", "OMPI_COMM_WORLD_RANK"),
    "local_rank": ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),
}


def _env_int(kind: str) -> int | None:
    for var in _RANK_VARS[kind]:
        value = os.environ.get(var)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                raise ConfigError(f"{var}={value!r}: expected an integer set by the launcher") from None
    return None


def sagemaker_hosts() -> list[str]:
    raw = os.environ.get("SM_HOSTS", "")
    try:
        hosts = json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError(f'SM_HOSTS={raw!r}: expected a JSON list of host names, e.g. ["algo-1","algo-2"]') from None
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"SM_HOSTS={raw!r}: expected a non-empty JSON list of host names")
    return hosts


def launcher_rank() -> int:
    """Global rank as the launcher set it, before Lightning or torch.distributed exist (0 when unknown)."""
    rank = _env_int("rank")
    if rank is not None:
        return rank
    return _env_int("local_rank") or 0  # a process Lightning itself launched, which it only does on one host


class SageMakerEnvironment(ClusterEnvironment):
    """ClusterEnvironment for SageMaker training jobs (torchrun, mpirun/smddprun, or no launcher)."""

    def __init__(self) -> None:
        super().__init__()
        self._world_size = 1
        self._global_rank = 0

    @staticmethod
    def detect() -> bool:
        return bool(os.environ.get("SM_HOSTS")) and bool(os.environ.get("SM_CURRENT_HOST"))

    # -- hosts -----------------------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        return sagemaker_hosts()

    @property
    def num_hosts(self) -> int:
        return len(self.hosts)

    @property
    def current_host(self) -> str:
        return os.environ.get("SM_CURRENT_HOST", "")

    @staticmethod
    def launched() -> bool:
        """Whether a launcher (torchrun, mpirun) started the ranks; without one this is the only process."""
        return _env_int("world_size") is not None

    # -- ClusterEnvironment ----------------------------------------------------------------
    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR") or self.hosts[0]

    @property
    def main_port(self) -> int:
        value = os.environ.get("MASTER_PORT")
        return int(value) if value else DEFAULT_PORT

    def world_size(self) -> int:
        size = _env_int("world_size")
        return size if size is not None else self._world_size

    def set_world_size(self, size: int) -> None:
        self._world_size = size

    def global_rank(self) -> int:
        rank = _env_int("rank")
        return rank if rank is not None else self._global_rank

    def set_global_rank(self, rank: int) -> None:
        self._global_rank = rank

    def local_rank(self) -> int:
        return _env_int("local_rank") or 0

    def node_rank(self) -> int:
        hosts, current = self.hosts, self.current_host
        if current not in hosts:
            raise ConfigError(f"SM_CURRENT_HOST={current!r} is not in SM_HOSTS={hosts}")
        return hosts.index(current)

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        hosts = self.num_hosts
        if num_nodes != hosts:
            raise ConfigError(
                f"trainer.num_nodes={num_nodes} but this SageMaker job has {hosts} host(s) (SM_HOSTS); "
                "set trainer.num_nodes=auto (trainer=smddp does) or match the job's instance_count"
            )
        size = _env_int("world_size")
        if size is not None and num_devices * num_nodes != size:
            raise ConfigError(
                f"trainer.devices={num_devices} x trainer.num_nodes={num_nodes} = {num_devices * num_nodes} "
                f"processes, but the launcher started {size} (WORLD_SIZE/OMPI_COMM_WORLD_SIZE); "
                "set trainer.devices=auto (SM_NUM_GPUS per host) or match the job's processes per host"
            )
        if size is None and hosts > 1:
            raise ConfigError(
                f"this SageMaker job has {hosts} hosts but no launcher started the ranks (no WORLD_SIZE or "
                "OMPI_COMM_WORLD_SIZE): enable distribution (smdistributed dataparallel or torch_distributed)"
            )

    def processes_per_host(self) -> int:
        """Ranks per host: the launcher's world size over the hosts; 1 without a launcher.

        On an SMDDP or torch_distributed job the launcher starts one process per
        GPU (``SM_NUM_GPUS``), so both agree; when they do not, the launcher wins (a
        rank count that differs from the running processes hangs at rendezvous)
        and we say so.
        """
        gpus = int(os.environ.get("SM_NUM_GPUS", "0") or 0)
        size = _env_int("world_size")
        if size is None:
            if gpus > 1:
                log.warning("no launcher started the ranks: training on 1 of SM_NUM_GPUS=%d GPUs", gpus)
            return 1
        hosts = self.num_hosts
        if size % hosts:
            raise ConfigError(
                f"the launcher started {size} processes over {hosts} hosts (SM_HOSTS): not the same number per host"
            )
        per_host = size // hosts
        if gpus and per_host != gpus:
            log.warning("launcher started %d process(es) per host but SM_NUM_GPUS=%d", per_host, gpus)
        return per_host
