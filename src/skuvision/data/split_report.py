"""Requested vs achieved split fractions of a shard build, and the warnings a user must see.

Why: a split that silently drifts (training images moved to test, a SKU with no training image,
an empty val split) costs accuracy without any error. The build prints these figures, records
them in the manifest (``split_fractions``, ``split_warnings``) and warns when they leave the bounds
the splitter guarantees on sensible data: ±2 points over the build, ±5 points per SKU with at least
``PER_SKU_MIN`` images. Only images the build split itself count; a split given in the CSV is the
user's decision and is reported apart.
"""

from __future__ import annotations

from collections import Counter

SPLITS = ("train", "val", "test")
BUILD_TOLERANCE = 0.02
SKU_TOLERANCE = 0.05
PER_SKU_MIN = 50
NAMED = 5  # SKUs named in one warning


def _fractions(counts: Counter) -> dict[str, float]:
    n = sum(counts[s] for s in SPLITS)
    return {s: round(counts[s] / n, 4) if n else 0.0 for s in SPLITS}


def _deviation(counts: Counter, requested: dict[str, float]) -> float:
    n = sum(counts[s] for s in SPLITS)
    return max(abs(counts[s] / n - requested[s]) for s in SPLITS) if n else 0.0


def named(items: list[str]) -> str:
    """The first ``NAMED`` items, comma-separated, and how many more."""
    more = f" (+{len(items) - NAMED} more)" if len(items) > NAMED else ""
    return ", ".join(items[:NAMED]) + more


def _show(counts) -> str:
    return " ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS)


def split_report(
    per_sku: dict[str, dict[str, int]],
    free: dict[str, Counter],
    val: float,
    test: float,
    straddling: list[list[str]] | None = None,
) -> tuple[dict, list[str]]:
    """(fractions for the manifest, warnings); ``free``: per SKU, images the build split itself;
    ``straddling``: near-duplicate groups whose members were given different splits in the CSV."""
    requested = {"train": round(1 - val - test, 4), "val": val, "test": test}
    built = sum((Counter(c) for c in free.values()), Counter())
    total = sum((Counter(c) for c in per_sku.values()), Counter())
    given = total - built
    fractions = {
        "requested": requested,
        "achieved": _fractions(built),
        "images_split": sum(built.values()),
        "given": {s: given[s] for s in SPLITS},
        "achieved_all": _fractions(total),
    }
    warnings = []
    worst = sorted(
        ((_deviation(Counter(c), requested), sku) for sku, c in free.items() if sum(c.values()) >= PER_SKU_MIN),
        reverse=True,
    )
    worst_named = [f"{sku} ({_show(free[sku])})" for d, sku in worst if d > SKU_TOLERANCE]
    if built and _deviation(built, requested) > BUILD_TOLERANCE:
        got = " ".join(f"{s} {fractions['achieved'][s]:.3f}" for s in SPLITS)
        want = " ".join(f"{s} {requested[s]:.2f}" for s in SPLITS)
        warnings.append(
            f"split fractions {got} are more than {BUILD_TOLERANCE * 100:.0f} points off the requested "
            f"{want}" + (f"; worst SKUs: {named(worst_named)}" if worst_named else "")
        )
    if worst_named:
        warnings.append(
            f"{len(worst_named)} SKU(s) with >= {PER_SKU_MIN} images are more than "
            f"{SKU_TOLERANCE * 100:.0f} points off the requested fractions: {named(worst_named)}"
        )
    no_train = sorted(sku for sku, c in per_sku.items() if not c.get("train"))
    if no_train:
        warnings.append(
            f"{len(no_train)} SKU(s) have no training images, so the model cannot learn them: {named(no_train)}"
        )
    single = sorted(sku for sku, c in per_sku.items() if sum(c.values()) == 1)
    if single and (val or test):
        warnings.append(
            f"{len(single)} SKU(s) have a single valid image (in one split only), so val/test cannot "
            f"measure them: {named(single)}"
        )
    for split, frac in (("val", val), ("test", test)):
        if frac > 0 and not total[split]:
            warnings.append(
                f"--{split} {frac} was requested but the {split} split is empty "
                "(too few images per SKU, or every row has a given split)"
            )
    if straddling:
        warnings.append(
            f"{len(straddling)} near-duplicate group(s) span the splits given in the CSV, so near-copies "
            f"sit in two splits (leakage); kept as given. First: {', '.join(straddling[0])}"
        )
    return fractions, warnings
