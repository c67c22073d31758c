"""Deterministic, leakage-aware train/val/test assignment that keeps the requested fractions.

Near-duplicate frames of a SKU (perceptual hashes within ``max_distance`` bits) share one split,
so a twin of a training frame never sits in test; groups are complete-linkage, because chains of
close pairs ran through whole low-variation SKUs. Fractions are kept per SKU: big groups go where
images lack, then lone images and pairs fill each split in content-hash order. Each cut is recorded
(``split_cuts``) so a later build with ``--label-map`` moves no earlier image; a CSV-given split is
fixed. The README's "Splits" section has the details; BENCHMARKS.md the figures behind the choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")
CUT_ORDER = ("test", "val")  # hash order: lowest units to test, then val, the rest to train
IN_HASH_ORDER = 2  # groups up to this size take their place in hash order; bigger ones go where images lack


def hash_unit(content_hash: str) -> float:
    """Map a hex digest to [0, 1) (52 bits: exact in a float and in JSON)."""
    return int(content_hash[:13], 16) / float(16**13)


def split_for_unit(u: float, val: float, test: float) -> str:
    """The split a lone image would get by its hash alone (a fixed band per split)."""
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"


def near_duplicate_groups(phashes: list[int], max_distance: int) -> tuple[list[list[int]], int]:
    """(complete-linkage groups, the distance used for this SKU). O(n^2) per SKU.

    Closest pairs merge first, and only while every cross pair is within the distance, so no
    chain of distinct views can grow one group. Copies come in ones and twos per frame, so when
    a SKU has more pairs within the distance than images, the hash is seeing views that look alike
    (a studio rig, scans), not copies: the distance is lowered bit by bit until that is no longer
    so (down to -1, no grouping), and the split keeps its fractions.
    """
    n = len(phashes)
    if max_distance < 0 or n < 2:
        return [[i] for i in range(n)], max_distance
    h = np.array(phashes, dtype=np.uint64)
    x = h[:, None] ^ h[None, :]
    dist = np.zeros((n, n), dtype=np.int32)
    for shift in range(0, 64, 8):  # popcount byte by byte
        dist += _POPCOUNT[((x >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.intp)]
    upper = dist[np.triu_indices(n, k=1)]
    pairs_within = np.cumsum(np.bincount(upper, minlength=65))  # [d] = pairs at distance <= d
    while max_distance >= 0 and pairs_within[max_distance] > n:
        max_distance -= 1
    if max_distance < 0:
        return [[i] for i in range(n)], max_distance
    ii, jj = np.nonzero(np.triu(dist <= max_distance, k=1))
    order = np.lexsort((jj, ii, dist[ii, jj]))  # by distance, then index: deterministic
    link = dist.copy()  # complete-linkage distance between the groups of i and j (at their roots)
    root = list(range(n))
    members = {i: [i] for i in range(n)}
    for k in order:
        a, b = root[ii[k]], root[jj[k]]
        if a == b or link[a, b] > max_distance:
            continue
        a, b = min(a, b), max(a, b)
        link[a, :] = np.maximum(link[a, :], link[b, :])
        link[:, a] = link[a, :]
        for m in members[b]:
            root[m] = a
        members[a] += members.pop(b)
    return [sorted(g) for _, g in sorted(members.items())], max_distance


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int16)


def targets(n: int, val: float, test: float, units: int) -> dict[str, int]:
    """Images per split for ``n`` images: rounded cumulative shares; with ``units`` (groups +
    lone images) enough for it, every requested split gets one and train keeps one."""
    t = int(test * n + 0.5)
    v = int((test + val) * n + 0.5) - t
    want = {"test": t, "val": v, "train": n - t - v}
    wanted = [s for s, frac in (("val", val), ("test", test)) if frac > 0]
    if units >= 1 + len(wanted):
        for s in wanted:
            if want[s] == 0 and want["train"] > 1:
                want[s], want["train"] = 1, want["train"] - 1
    return want


@dataclass
class SplitResult:
    splits: list[str]  # per image
    new_pins: dict[str, str] = field(default_factory=dict)  # content hash -> split, for grouped images
    cuts: dict[str, list[float]] = field(default_factory=dict)  # "test"/"val" -> [lo, hi] hash units


def assign_splits(
    hashes: list[str],
    groups: list[list[int]],
    val: float,
    test: float,
    pinned: dict[str, str] | None = None,
    given: list[str] | None = None,
    cuts: dict[str, list[float]] | None = None,
) -> SplitResult:
    """Split every image of one SKU. ``given``: per image a user split or ""; ``pinned`` and
    ``cuts`` come from the previous build's manifest."""
    pinned, cuts = pinned or {}, cuts or {}
    given = given or [""] * len(hashes)
    units = [hash_unit(h) for h in hashes]
    splits = list(given)
    free = [i for i in range(len(hashes)) if not given[i]]
    want = targets(len(free), val, test, sum(1 for g in groups if any(not given[i] for i in g)))
    count = dict.fromkeys(SPLITS, 0)

    def place(i: int, split: str) -> None:
        splits[i] = split
        count[split] += 1

    loose, lone = [], []
    for members in groups:
        todo = [i for i in members if not splits[i]]
        for i in todo:
            if hashes[i] in pinned:  # an earlier build's decision always stands, per image
                place(i, pinned[hashes[i]])
        todo = [i for i in todo if not splits[i]]
        if not todo:
            continue
        anchor = [splits[i] for i in members if splits[i]]
        if anchor:  # a given or pinned member decides for the rest of the group
            for i in todo:
                place(i, anchor[0])
        if anchor or not todo:
            continue
        if len(todo) > IN_HASH_ORDER:
            loose.append(todo)
        else:
            lone.append(todo)

    for todo in sorted(loose, key=lambda g: (-len(g), min(units[i] for i in g))):
        lack = {s: want[s] - count[s] for s in SPLITS}
        fits = [s for s in SPLITS if lack[s] >= len(todo) and want[s] > 0]
        split = max(fits, key=lambda s: lack[s] / want[s]) if fits else max(SPLITS, key=lambda s: lack[s])
        for i in todo:
            place(i, split)

    new_cuts = _cut_in_hash_order(lone, units, want, count, cuts, place)
    new_pins = {hashes[i]: splits[i] for members in groups if len(members) > 1 for i in members if not given[i]}
    return SplitResult(splits, new_pins, new_cuts)


def _cut_in_hash_order(items: list[list[int]], units: list[float], want: dict, count: dict, cuts: dict, place) -> dict:
    """Fill test, then val, from the lowest hash units of the lone images and pairs (a pair at its
    lower unit); the rest train. Each cut stays inside the interval the previous build recorded,
    so no older image crosses it. Without that record the cuts still fall near the same units, so a
    rebuild with more images moves few images."""
    if not items:
        return dict(cuts)
    key = [min(units[i] for i in item) for item in items]
    values = sorted(set(key))  # equal units (identical files) never straddle a cut
    rank = {v: k for k, v in enumerate(values)}
    weight = np.zeros(len(values), dtype=int)
    for item, v in zip(items, key):
        weight[rank[v]] += len(item)
    cum = np.concatenate([[0], np.cumsum(weight)])
    m, pos, goal, new_cuts, at = len(values), 0, 0, {}, {}
    for split in CUT_ORDER:
        goal += max(0, want[split] - count[split])
        lo, hi = cuts.get(split, (-1.0, 2.0))
        first = max(pos, int(np.searchsorted(values, lo, side="right")))
        last = max(first, int(np.searchsorted(values, hi, side="left")))
        pos = min(range(first, last + 1), key=lambda q: (abs(int(cum[q]) - goal), q))
        at[split] = pos
        new_cuts[split] = [values[pos - 1] if pos > 0 else -1.0, values[pos] if pos < m else 2.0]
    for item, v in zip(items, key):
        k = rank[v]
        for i in item:
            place(i, "test" if k < at["test"] else "val" if k < at["val"] else "train")
    return new_cuts
