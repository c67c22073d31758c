"""Training batches mix SKUs from the whole train split, although shards store each SKU's images together.

litdata >= 0.2.7x shuffles items inside a chunk only within windows of 256 by default; with
SKU-ordered chunks a batch then held a few neighbouring SKUs, and a frozen backbone's head on
81 GroceryStoreDataset SKUs learned next to nothing (val top-1 0.23 where a linear probe gets 0.70).
"""

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
