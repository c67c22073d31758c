"""Nothing at 12,000 SKUs may hold a classes x classes (or images x classes) structure: issue 20's rehearsal.

Fast: synthetic logits of a few thousand classes, no model, no training.
"""

from __future__ import annotations

import tracemalloc

import numpy as np

from skuvision.data.labels import LabelMap
from skuvision.export.evaluate import TopK, brand_accuracy, compute_metrics, top_indices

CLASSES, IMAGES, BATCH = 4000, 4000, 64


def _labels(classes: int, per_brand: int = 3) -> LabelMap:
    skus = {f"SKU-{i:05d}": i for i in range(classes)}
    return LabelMap.from_dict(
        {"sku_to_index": skus, "brands": {s: f"B{i // per_brand}" for s, i in skus.items()}, "categories": {}}
    )


def test_top_indices_is_a_stable_argsort_cut_to_k_ties_included():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 6, size=(200, 50)).astype(np.float32)  # many ties
    expected = np.argsort(-values, axis=1, kind="stable")[:, :5]
    assert np.array_equal(top_indices(values, 5), expected)
    assert np.array_equal(top_indices(values[:, :3], 5), np.argsort(-values[:, :3], axis=1, kind="stable"))


def test_evaluate_keeps_top5_per_image_not_the_logits_of_the_split():
    """The old evaluate concatenated every batch's logits (IMAGES x CLASSES float32 = 64 MB here, 576 MB at
    12,000 SKUs) and arg-sorted them whole; TopK keeps images x 5 and peaks at a batch's worth."""
    labels_map = _labels(CLASSES)
    kept = TopK(labels_map.attribute_targets("brand"))
    rng = np.random.default_rng(1)
    labels = rng.integers(0, CLASSES, IMAGES)
    tracemalloc.start()
    for start in range(0, IMAGES, BATCH):
        logits = rng.standard_normal((min(BATCH, IMAGES - start), CLASSES), dtype=np.float32)
        logits[np.arange(len(logits)), labels[start : start + BATCH]] += 5.0  # mostly right
        kept.add(logits)
        del logits
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    top, brand_top = kept.result(CLASSES)
    assert top.shape == (IMAGES, 5) and brand_top.shape == (IMAGES, 5)
    full = IMAGES * CLASSES * 4
    assert peak < full / 8, f"peak {peak / 2**20:.1f} MiB: the split's logits are {full / 2**20:.0f} MiB"
    metrics = compute_metrics(top, brand_top, labels, labels_map, "test")
    assert 0.5 < metrics["test/top1"] <= metrics["test/top5"] <= 1.0
    assert 0.5 < metrics["test/brand_top1"] <= metrics["test/brand_top5"] <= 1.0


def test_brand_top_matches_summed_probabilities_of_each_brands_skus():
    labels_map = _labels(9, per_brand=3)  # brands B0 (0-2), B1 (3-5), B2 (6-8)
    logits = np.log(np.array([[0.30, 0, 0, 0.25, 0.25, 0, 0.2, 0, 0]], np.float32) + 1e-9)
    kept = TopK(labels_map.attribute_targets("brand"))
    kept.add(logits)
    top, brand_top = kept.result(9)
    assert top[0, 0] == 0 and list(brand_top[0, :3]) == [1, 0, 2]  # B1 sums 0.5 and beats SKU 0's brand
    assert brand_accuracy(brand_top, np.array([3]), labels_map, "test")["test/brand_top1"] == 1.0


def _largest_allocation(fn) -> int:
    """The largest CPU memory one call of a torch op allocated (bytes, its children included) while ``fn`` ran."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max((e.cpu_memory_usage for e in prof.events()), default=0)


def test_ridge_sums_add_without_a_one_hot_of_images_x_classes():
    """Every training run's ridge pass and every onboarding add these sums; a one-hot matmul was
    images x classes float64 (here 2,000 x 4,000 x 8 = 64 MB; 484 MB for a 12,000-SKU month)."""
    import torch
    import torch.nn.functional as F

    from skuvision.model.ridge import RidgeStats

    images, dim = 2000, 16
    feats, labels = torch.randn(images, dim), torch.randint(0, CLASSES, (images,))
    stats = RidgeStats(dim, CLASSES)
    peak = _largest_allocation(lambda: stats.add(feats, labels, CLASSES))
    assert peak < images * CLASSES * 8 / 8, f"largest allocation {peak / 2**20:.1f} MiB"
    f = torch.cat([feats.double(), torch.ones(images, 1, dtype=torch.float64)], 1)
    assert torch.allclose(stats.cross, f.T @ F.one_hot(labels, CLASSES).double())
    assert torch.allclose(stats.gram, f.T @ f)


def test_onboarding_scores_its_test_images_in_chunks():
    """Onboarding tests on every earlier test image: scored at once that was images x classes logits."""
    import torch

    from skuvision.onboarding.task import hits

    images, dim = 4000, 16
    layer = torch.nn.Linear(dim, CLASSES)
    feats, labels = torch.randn(images, dim), torch.randint(0, CLASSES, (images,))
    result = {}
    peak = _largest_allocation(lambda: result.update(zip(("top1", "top5"), hits(layer, feats, labels, 5))))
    assert peak < images * CLASSES * 4 / 2, f"largest allocation {peak / 2**20:.1f} MiB"
    with torch.no_grad():
        logits = layer(feats)
    assert torch.equal(result["top1"], logits.argmax(1) == labels)
    assert torch.equal(result["top5"], (logits.topk(5, 1).indices == labels[:, None]).any(1))
