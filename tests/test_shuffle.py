"""Training batches mix SKUs from the whole train split, although shards store each SKU's images together.

litdata >= 0.2.7x shuffles items inside a chunk only within windows of 256 by default; with
SKU-ordered chunks a batch then held a few neighbouring SKUs, and a frozen backbone's head on
81 GroceryStoreDataset SKUs learned next to nothing (val top-1 0.23 where a linear probe gets 0.70).
"""

from collections import Counter

from skuvision.config.data_module import shard_data_module

SKUS, PER_SKU = 100, 6


def test_first_batches_span_the_whole_catalogue(tmp_path):
    from skuvision.data.shards import BuildSettings, build_shards
    from skuvision.data.synthetic import write_catalogue

    write_catalogue(tmp_path / "images", SKUS, PER_SKU, size=32, seed=5, progress=False)
    build_shards(tmp_path / "images", tmp_path / "shards", BuildSettings(size=32, val=0.0, test=0.0), progress=False)
    dm = shard_data_module(str(tmp_path / "shards"), image_size=32, batch_size=32, num_workers=0, backbone="resnet10t")
    assert dm.manifest["splits"]["train"]["count"] >= 2 * 256  # more than one of litdata's default windows
    for _, batch in zip(range(3), dm.train_dataloader()):
        labels = batch["label"].tolist()
        # 32 draws from 100 SKUs: a full shuffle spans ~95 class indices; a 256-item window ~43 at most
        assert max(labels) - min(labels) > 60, sorted(labels)
        assert len(set(labels)) >= 20, sorted(labels)


def test_batches_span_the_catalogue_with_workers_and_several_chunks(tmp_path):
    """litdata hands each loader worker a contiguous run of the split, and a batch comes from one
    worker: without the datamodule's permutation a batch of 2 workers held half the SKUs at most
    (GroceryStoreDataset, shards at --size 320 with 4 workers: as few as 4 SKUs in a batch of 32)."""
    from skuvision.data.shards import BuildSettings, build_shards
    from skuvision.data.synthetic import write_catalogue

    write_catalogue(tmp_path / "images", SKUS, PER_SKU, size=32, seed=5, progress=False)
    settings = BuildSettings(size=32, val=0.0, test=0.0, chunk_bytes="200KB")
    build_shards(tmp_path / "images", tmp_path / "shards", settings, progress=False)
    dm = shard_data_module(str(tmp_path / "shards"), image_size=32, batch_size=32, num_workers=2, backbone="resnet10t")
    assert len(dm._dataset("train").chunk_names) >= 3
    loader = dm.train_dataloader()
    for epoch in range(2):
        seen: Counter = Counter()
        batches = 0
        for batch in loader:
            labels = batch["label"].tolist()
            assert max(labels) - min(labels) > 60, (epoch, sorted(labels))
            assert len(set(labels)) >= 20, (epoch, sorted(labels))
            seen.update(labels)
            batches += 1
        assert batches >= 15 and max(seen.values()) <= PER_SKU, seen  # no image twice in an epoch
