"""Data: synthetic catalogue, litdata shards, label map, transforms, DataModule."""
