#!/usr/bin/env python
"""Before/after of the rehearsal's fixes at 12,000 classes, each variant in a fresh process.

``eval_old`` is what ``skuvision evaluate`` did with a split's logits (concatenate every batch,
arg-sort whole rows, softmax of all of them); ``eval_new`` is :class:`skuvision.export.evaluate.TopK`.
``ridge_old`` is ``RidgeStats.add``'s one-hot matmul for a 12,000-SKU month's 4,800 new images;
``ridge_new`` its ``index_add_``. Synthetic logits and features: no model, no data. Prints one line
per variant: seconds and the peak RSS above the process's own after imports.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

CLASSES, IMAGES, BATCH, DIM, NEW_IMAGES = 12_000, 12_000, 64, 65, 4_800


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def variant(which: str) -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from skuvision.export.evaluate import TopK

    rng, before, start = np.random.default_rng(0), peak_mb(), time.perf_counter()
    batches = (rng.standard_normal((BATCH, CLASSES), dtype=np.float32) for _ in range(IMAGES // BATCH))
    if which == "eval_old":
        logits = np.concatenate(list(batches))
        np.argsort(-logits, axis=1, kind="stable")[:, :5]
        shifted = np.exp(logits - logits.max(1, keepdims=True))
        shifted / shifted.sum(1, keepdims=True)
    elif which == "eval_new":
        kept = TopK(None)
        for batch in batches:
            kept.add(batch)
        kept.result(CLASSES)
    else:
        f, y = torch.randn(NEW_IMAGES, DIM, dtype=torch.float64), torch.randint(0, CLASSES, (NEW_IMAGES,))
        if which == "ridge_old":
            f.T @ F.one_hot(y, CLASSES).double()
        else:
            torch.zeros(DIM, CLASSES, dtype=torch.float64).index_add_(1, y, f.T)
    print(f"| {which} | {time.perf_counter() - start:.2f} | {peak_mb() - before:.0f} |", flush=True)


VARIANTS = ("eval_old", "eval_new", "ridge_old", "ridge_new")


def main() -> int:
    if len(sys.argv) > 1:
        if sys.argv[1] not in VARIANTS:
            print(__doc__ + f"\nusage: {Path(__file__).name} [{'|'.join(VARIANTS)}]")
            return 0 if sys.argv[1] in ("-h", "--help") else 2
        variant(sys.argv[1])
        return 0
    print(f"| variant ({CLASSES:,} classes) | s | peak RSS above imports, MiB |\n|---|---|---|", flush=True)
    for which in VARIANTS:
        subprocess.run([sys.executable, str(Path(__file__).resolve()), which], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
