"""Test-only callback the multi-process tests add with `+callbacks.probe=...`: each rank reports where it ran.

Writes ``rank<global rank>.json`` into ``out_dir`` at the end of fit: ranks as the
cluster environment and torch.distributed see them, the process group backend,
and a digest of the weights before and after training (ranks must agree).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import torch


def weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class RankProbe(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.start_digest = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self.start_digest = weights_digest(pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        dist = torch.distributed
        env = trainer.strategy.cluster_environment
        record = {
            "global_rank": trainer.global_rank,
            "local_rank": trainer.local_rank,
            "node_rank": trainer.node_rank,
            "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "num_devices": trainer.num_devices,
            "dist_rank": dist.get_rank() if dist.is_initialized() else None,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "strategy": type(trainer.strategy).__name__,
            "environment": type(env).__name__ if env else None,
            "start_digest": self.start_digest,
            "end_digest": weights_digest(pl_module),
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record, indent=2))


def read_probes(out_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("rank*.json"))]
