"""Rank bookkeeping and DDP math with real process groups (gloo underneath the SMDDP stand-in).

The workers live at the bottom of this file and run as ``python tests/test_distributed_ranks.py
<mode> <out dir>`` in processes the tests start, so each rank is a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import subprocess_pythonpath

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
STUBS = TESTS / "stubs"
HOSTS = '["algo-1", "algo-2"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(stub: bool = True) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SM_", "OMPI_", "TORCHELASTIC", "GROUP_", "LOCAL_"))
        and k not in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK")
    }
    env.update({"PYTHONPATH": subprocess_pythonpath(*([STUBS] if stub else [])), "OMP_NUM_THREADS": "1"})
    return env


def start_hosts(out_dir: Path, rank_vars: str) -> list[subprocess.Popen]:
    """Two simulated SageMaker hosts, one process each, both on 127.0.0.1."""
    port, procs = free_port(), []
    for rank, host in enumerate(["algo-1", "algo-2"]):
        env = base_env()
        env.update(
            {
                "SM_HOSTS": HOSTS,
                "SM_CURRENT_HOST": host,
                "SM_NUM_GPUS": "1",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            }
        )
        if rank_vars == "torchrun":
            env.update({"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": "0"})
        else:  # what mpirun (SMDDP's launcher) exports, and nothing else
            env.update(
                {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_LOCAL_RANK": "0"}
            )
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "hosts", str(out_dir)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


@pytest.mark.slow
@pytest.mark.parametrize("rank_vars", ["torchrun", "mpirun"])
def test_two_simulated_hosts_get_node_and_global_ranks(rank_vars, tmp_path):
    from helpers.distributed_probe import read_probes

    procs = start_hosts(tmp_path, rank_vars)
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    ranks = read_probes(tmp_path)
    assert [(r["node_rank"], r["global_rank"], r["local_rank"], r["dist_rank"]) for r in ranks] == [
        (0, 0, 0, 0),
        (1, 1, 0, 1),
    ]
    assert {(r["world_size"], r["num_nodes"], r["num_devices"]) for r in ranks} == {(2, 2, 1)}  # nodes from SM_HOSTS
    assert {r["environment"] for r in ranks} == {"SageMakerEnvironment"} and {r["backend"] for r in ranks} == {"smddp"}
    assert ranks[0]["end_digest"] == ranks[1]["end_digest"] != ranks[0]["start_digest"]


# -- gradient equivalence ----------------------------------------------------------------
B, STEPS = 4, 4  # per-rank batch, optimizer steps


@pytest.mark.slow
def test_two_ranks_of_batch_b_reach_the_weights_of_one_process_of_batch_2b(tmp_path):
    """freeze_depth=5 (frozen BatchNorm in eval mode), head without BN or dropout, same sample order.

    DDP averages the ranks' gradients of their mean losses, which equals the gradient of the mean
    loss over the 2B-sample global batch; the global batch (and so the scaled lr) is 2B both ways.
    """
    env = base_env()
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        __file__,
        "grad",
        str(tmp_path / "ddp"),
    ]
    ddp = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert ddp.returncode == 0, (ddp.stdout + ddp.stderr)[-4000:]
    single = subprocess.run(
        [sys.executable, __file__, "grad", str(tmp_path / "single")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert single.returncode == 0, (single.stdout + single.stderr)[-4000:]

    info = json.loads((tmp_path / "ddp" / "rank0.json").read_text())
    assert info["backend"] == "smddp" and info["world_size"] == 2 and info["global_batch"] == 2 * B
    assert json.loads((tmp_path / "single" / "rank0.json").read_text())["global_batch"] == 2 * B
    start = torch.load(tmp_path / "single" / "start.pt")
    reference = torch.load(tmp_path / "single" / "rank0.pt")
    for rank in (0, 1):
        trained = torch.load(tmp_path / "ddp" / f"rank{rank}.pt")
        assert trained.keys() == reference.keys()
        for name in reference:
            moved = (reference[name] - start[name]).abs().max().item()
            assert moved > 1e-2, f"{name} barely trained ({moved})"
            torch.testing.assert_close(trained[name], reference[name], rtol=1e-4, atol=1e-6, msg=f"rank {rank} {name}")


# -- workers (run in their own processes) ---------------------------------------------------------
class _TinyModule:
    """A LightningModule small enough that the host test measures ranks, not training."""

    @staticmethod
    def build():
        import lightning as L

        class Tiny(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(8, 2)

            def training_step(self, batch, batch_idx):
                x, y = batch
                return torch.nn.functional.cross_entropy(self.layer(x), y)

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return Tiny()


def _hosts_worker(out_dir: str) -> None:
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    import skuvision.distributed  # noqa: F401  registers "smddp"
    from skuvision.distributed.layout import cluster_layout

    from helpers.distributed_probe import RankProbe

    L.seed_everything(0)
    data = TensorDataset(torch.randn(32, 8), torch.randint(0, 2, (32,)))
    layout = cluster_layout({"devices": "auto", "num_nodes": "auto", "strategy": "smddp"})
    # a bare Trainer on purpose (rank bookkeeping only, no run dir for loggers to write to); the default
    # callbacks and loggers on several ranks are tests/test_distributed_collectives.py's job
    trainer = L.Trainer(
        strategy="smddp",
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[RankProbe(out_dir)],
        **layout,
    )
    trainer.fit(_TinyModule.build(), DataLoader(data, batch_size=4))


def _grad_worker(out_dir: str) -> None:
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    import skuvision.distributed  # noqa: F401
    from skuvision.model.module import SKUClassifier

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(STEPS * 2 * B, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 4, (STEPS * 2 * B,), generator=generator)
    per_rank = 2 * B // world
    # global batch i is samples [i*2B, (i+1)*2B); rank r takes its r-th slice of each
    order = [i * 2 * B + rank * per_rank + j for i in range(STEPS) for j in range(per_rank)]

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(TensorDataset(images[order], labels[order]), batch_size=per_rank, shuffle=False)

    class Classifier(SKUClassifier):  # the module's own step on (image, label) tuples
        def training_step(self, batch, batch_idx):
            return self._step({"image": batch[0], "label": batch[1]}, "train")

    L.seed_everything(0)
    model = Classifier(
        num_classes=4,
        backbone="resnet10t",
        freeze_depth=5,
        aux_heads=False,
        head={"hidden_dims": [16], "dropout": 0.0, "norm": "none"},
        optimizer={"name": "sgd", "lr": 8.0, "momentum": 0.9, "weight_decay": 1e-4},
        scheduler={"warmup_fraction": 0.0},
        batch_size=per_rank,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    head = lambda: {k: v.detach().clone() for k, v in model.head.state_dict().items()}  # noqa: E731
    if rank == 0:
        torch.save(head(), out / "start.pt")
    strategy = "smddp" if world > 1 else "auto"
    # a bare Trainer on purpose: the 1-process run must take exactly the same steps as the 2-rank one,
    # with no checkpoint or logger in between (the full callback stack runs in test_distributed_collectives)
    trainer = L.Trainer(
        strategy=strategy,
        accelerator="cpu",
        devices=world,
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(model, datamodule=Data())
    torch.save(head(), out / f"rank{rank}.pt")
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else None
    (out / f"rank{rank}.json").write_text(
        json.dumps({"backend": backend, "world_size": trainer.world_size, "global_batch": model.global_batch_size()})
    )


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS))
    {"hosts": _hosts_worker, "grad": _grad_worker}[sys.argv[1]](sys.argv[2])
