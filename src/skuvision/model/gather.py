"""Misclassified (true, predicted) rows of every rank, on every rank: what confusions.csv is made of."""

from __future__ import annotations

import numpy as np
import torch


def gather_pairs(strategy, pairs: np.ndarray, rank: int, world_size: int, device="cpu") -> np.ndarray:
    """Every rank's (K_r, 2) misclassified (true, pred) rows, concatenated on every rank.

    Built from two sum-reductions, the one collective every strategy here supports (DDP, SMDDP,
    single device, where ``reduce`` returns its input): the per-rank counts, then one buffer in
    which each rank fills its own slice. float32 holds class indices exactly up to 2**24; ``device``
    is the model's (NCCL reduces CUDA tensors only).
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if world_size <= 1:
        return pairs
    counts = torch.zeros(world_size, device=device)
    counts[rank] = len(pairs)
    counts = strategy.reduce(counts, reduce_op="sum").cpu().round().long().tolist()
    buffer = torch.zeros(max(1, sum(counts)), 2, device=device)
    start = sum(counts[:rank])
    buffer[start : start + len(pairs)] = torch.from_numpy(pairs).float().to(device)
    buffer = strategy.reduce(buffer, reduce_op="sum").cpu()
    return buffer[: sum(counts)].round().long().numpy()
