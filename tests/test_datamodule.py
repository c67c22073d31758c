import os
import socket

import torch
import torch.multiprocessing as mp

from skuvision.config.data_module import shard_data_module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _count_batches(rank: int, world: int, port: int, root: str, queue) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        dm = shard_data_module(root, image_size=32, batch_size=5, num_workers=0)
        dm.setup("fit")
        batches = [b["label"].shape[0] for b in dm.train_dataloader()]
        queue.put((rank, len(batches), sum(batches)))
    finally:
        dist.destroy_process_group()


def test_every_rank_gets_the_same_number_of_train_batches(tiny_shards):
    dm = shard_data_module(str(tiny_shards), image_size=32, batch_size=5, num_workers=0)
    n_train = dm.manifest["splits"]["train"]["count"]
    assert n_train % 2 == 1 or n_train % 10 != 0  # uneven over 2 ranks x batch 5
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_count_batches, args=(r, 2, port, str(tiny_shards), queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    (_, batches0, images0), (_, batches1, images1) = results
    assert batches0 == batches1 > 0
    assert images0 == images1 == batches0 * 5  # full batches only
    assert images0 * 2 <= n_train


def test_batches_are_normalised_tensors_with_labels(tiny_shards):
    dm = shard_data_module(str(tiny_shards), image_size=40, batch_size=4, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 40, 40) and batch["image"].dtype == torch.float32
    assert batch["label"].max() < dm.num_classes
    assert -3 < float(batch["image"].mean()) < 3
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[1:] == (3, 40, 40)
    assert dm.label_map.skus == sorted(dm.label_map.skus, key=dm.label_map.index)


def test_sagemaker_channel_is_the_default_root(tiny_shards, monkeypatch):
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(tiny_shards))
    assert shard_data_module(None).root == str(tiny_shards)
