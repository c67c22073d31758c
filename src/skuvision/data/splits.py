"""Deterministic, leakage-aware train/val/test assignment.

Each image's split comes from the hash of its bytes, so adding images to a SKU
later never moves an existing image (no retraining on former test images).
Near-duplicate frames (same SKU, perceptual hashes within ``max_distance`` bits)
share one split, the one of the group's smallest hash, so a twin of a training
frame never sits in test. A SKU with enough images but no val/test image after
hashing gets one group moved in, chosen by hash; those moves are recorded in
the manifest and honoured by later builds so they stay put too. Members of
near-duplicate groups are recorded the same way, so a twin that arrives in a
later build joins its group's split instead of re-deciding it. (A new twin of
an image that was a singleton until now can still move that image: which of
the two is older is not recorded, and keeping twins together wins.)

Why ``dedup_distance`` defaults to 8 bits (of 64): measured by
``scripts/benchmark_dedup.py`` on the synthetic catalogue, re-encoded copies
differ by 0-2 bits and 1-3 % crops by up to 8-10, while distinct camera views
of one SKU differ by >= 8 bits (about 1 pair in 15,000 at exactly 8), so 8
catches re-encodes and slight crops without chaining distinct views together.
"""

from __future__ import annotations

SPLITS = ("train", "val", "test")


def hash_unit(content_hash: str) -> float:
    """Map a hex digest to [0, 1)."""
    return int(content_hash[:13], 16) / float(16**13)


def split_for_unit(u: float, val: float, test: float) -> str:
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"


def group_near_duplicates(phashes: list[int], max_distance: int) -> list[list[int]]:
    """Union-find over pairs within ``max_distance`` Hamming bits; O(n^2) within one SKU only."""
    parent = list(range(len(phashes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if max_distance >= 0:
        for i in range(len(phashes)):
            for j in range(i + 1, len(phashes)):
                if (phashes[i] ^ phashes[j]).bit_count() <= max_distance:
                    ri, rj = find(i), find(j)
                    if ri != rj:
                        parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(len(phashes)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def assign_splits(
    hashes: list[str],
    groups: list[list[int]],
    val: float,
    test: float,
    pinned: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Split every image of one SKU; returns (split per image, newly pinned hash -> split)."""
    pinned = pinned or {}
    splits = [""] * len(hashes)
    group_split: list[str] = []
    for members in groups:
        pins = [pinned[hashes[i]] for i in members if hashes[i] in pinned]
        if pins:
            split = pins[0]
        else:
            split = split_for_unit(min(hash_unit(hashes[i]) for i in members), val, test)
        group_split.append(split)

    new_pins: dict[str, str] = {}
    wanted = [s for s, frac in (("val", val), ("test", test)) if frac > 0]
    for split in wanted:
        if split in group_split or len(groups) < 1 + len(wanted):
            continue
        candidates = [g for g, s in enumerate(group_split) if s == "train"]
        if len([g for g in candidates]) <= 1:
            continue  # keep at least one training group
        # the train group whose hash lies closest above the val/test band moves in
        g = min(candidates, key=lambda g: min(hash_unit(hashes[i]) for i in groups[g]))
        group_split[g] = split
        for i in groups[g]:
            new_pins[hashes[i]] = split

    for members, split in zip(groups, group_split):
        for i in members:
            splits[i] = split
            if len(members) > 1 and hashes[i] not in pinned:
                new_pins[hashes[i]] = split  # a twin added later joins this split, never drags it
    return splits, new_pins
