"""Several eval-time views of one image (``data.test_crops``) scored as one prediction.

Why the softmax is averaged and not the logits: each view's logits have their own scale (a corner
that misses the label is flat, the centre is peaked), and averaging probabilities lets a confident
view outvote unsure ones; the result is returned as log-probabilities, which are valid logits for
every consumer (arg-max, top-k, softmax, cross-entropy), so nothing downstream needs to know.
"""

from __future__ import annotations

import math

import torch


def average_views(logits: torch.Tensor, views: int) -> torch.Tensor:
    """(N x views, C) logits, views of one image adjacent -> (N, C) log of the mean softmax."""
    if views == 1:
        return logits
    log_probs = logits.float().log_softmax(dim=-1).view(-1, views, logits.shape[-1])
    return log_probs.logsumexp(dim=1) - math.log(views)
