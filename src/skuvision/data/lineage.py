"""Which shard sets a delta builds on, and whether a checkpoint may be extended with it.

A delta shard set (``shards build --label-map BASE/manifest.json``) holds only the new SKUs'
images; the old SKUs' images stay in the base (and its bases, one per earlier month). The
delta's manifest records its base's location and a hash of the base manifest's content, so
onboarding can find the replay images and prove they are the ones the label map was built
on: a base rebuilt or swapped since would silently reshuffle what "old SKU 17" means.
"""

from __future__ import annotations

from pathlib import Path

from skuvision.data.labels import LabelMap
from skuvision.data.manifest import MANIFEST, manifest_hash, read_manifest
from skuvision.data.remote import is_s3
from skuvision.errors import DataError


def base_record(label_map_path: str, data: dict) -> dict | None:
    """``{"path": base shard root, "sha256": ...}`` when ``label_map_path`` is a shard manifest, else None."""
    if not isinstance(data, dict) or "splits" not in data or "label_map" not in data:
        return None  # a bare label_map.json: no images to replay from
    if is_s3(label_map_path):
        root = str(label_map_path).rsplit("/", 1)[0]
    else:
        root = str(Path(label_map_path).resolve().parent)
    return {"path": root, "sha256": manifest_hash(data)}


def shard_chain(delta_root: str, delta_manifest: dict, base_override: str | None = None) -> list[tuple[str, dict]]:
    """[(root, manifest)] of every base, newest first, each checked against the hash its child recorded.

    ``base_override`` relocates the delta's direct base (the same shard set copied elsewhere, e.g.
    into a SageMaker channel); the hash still has to match.
    """
    chain: list[tuple[str, dict]] = []
    child_root, child = delta_root, delta_manifest
    seen = {str(delta_root)}
    while child.get("base"):
        record = child["base"]
        root = base_override if (base_override and child is delta_manifest) else record["path"]
        where = f"{child_root}/{MANIFEST}"
        try:
            manifest = read_manifest(root)
        except DataError:
            raise DataError(
                f"{where}: its base shard set {root} is not readable; copy it back or pass "
                "onboard.base=DIR where it now lives"
            ) from None
        if manifest_hash(manifest) != record["sha256"]:
            raise DataError(
                f"{where} was built on a base whose manifest has changed since ({root}/{MANIFEST}); "
                "rebuild the delta with --label-map pointing at the current base"
            )
        if str(root) in seen:
            raise DataError(f"{where}: base chain loops back to {root}; rebuild the delta")
        seen.add(str(root))
        chain.append((str(root), manifest))
        child_root, child = str(root), manifest
    return chain


def check_label_maps(
    ckpt_path: str,
    ckpt_map: LabelMap,
    delta_path: str,
    delta_map: LabelMap,
    base_path: str | None,
    base_map: LabelMap | None,
) -> list[str]:
    """The SKUs the delta adds; raises DataError (one line, both files) on any mismatch.

    Every SKU the checkpoint knows must sit at the same index in the delta, and the delta's base
    must be the shard set the checkpoint's label map came from (same SKUs, same indices).
    """
    for sku, index in ckpt_map.sku_to_index.items():
        other = delta_map.sku_to_index.get(sku)
        if other != index:
            found = "is missing" if other is None else f"has index {other}"
            raise DataError(
                f"label map mismatch: SKU {sku} has index {index} in {ckpt_path} but {found} in "
                f"{delta_path}; rebuild the delta with --label-map of the shard set that checkpoint was trained on"
            )
    if base_map is not None and base_map.sku_to_index != ckpt_map.sku_to_index:
        extra = len(set(base_map.sku_to_index) ^ set(ckpt_map.sku_to_index))
        raise DataError(
            f"base mismatch: {ckpt_path} ({len(ckpt_map)} SKUs) was not trained on the base {base_path} "
            f"({len(base_map)} SKUs, {extra} differ) that {delta_path} extends; pass the checkpoint "
            "trained on that base, or rebuild the delta with --label-map of the checkpoint's shard set"
        )
    new = [s for s in delta_map.skus if s not in ckpt_map.sku_to_index]
    if not new:
        raise DataError(f"{delta_path}: adds no SKU to the {len(ckpt_map)} of {ckpt_path}; nothing to onboard")
    return new
