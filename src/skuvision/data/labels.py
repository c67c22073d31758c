"""SKU id <-> class index mapping that never reorders existing SKUs.

New SKUs arrive every month; a model fine-tuned on an extended catalogue must
keep every existing output neuron meaning the same product, so indices are
append-only. The map is plain data (dict of str/int) so it can live inside a
checkpoint loaded with ``torch.load(weights_only=True)`` and inside exported models.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from skuvision.errors import DataError


@dataclass
class LabelMap:
    """Append-only SKU vocabulary with optional brand/category attributes."""

    sku_to_index: dict[str, int] = field(default_factory=dict)
    brands: dict[str, str] = field(default_factory=dict)
    categories: dict[str, str] = field(default_factory=dict)
    # index -> SKU id, rebuilt only when the map has grown: lookups stay O(1) at 12k+ SKUs
    _order: list[str] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        indices = sorted(self.sku_to_index.values())
        if indices != list(range(len(indices))):
            raise DataError(
                "label map: class indices must be 0..N-1 without gaps or repeats; "
                "rebuild it with `skuvision shards build`"
            )

    def __len__(self) -> int:
        return len(self.sku_to_index)

    def __contains__(self, sku_id: str) -> bool:
        return sku_id in self.sku_to_index

    def _by_index(self) -> list[str]:
        if len(self._order) != len(self.sku_to_index):  # append-only, so a length change is the only change
            order = [""] * len(self.sku_to_index)
            for sku_id, i in self.sku_to_index.items():
                order[i] = sku_id
            self._order = order
        return self._order

    @property
    def skus(self) -> list[str]:
        """SKU ids ordered by class index (a copy: O(N), no sort)."""
        return list(self._by_index())

    def index(self, sku_id: str) -> int:
        try:
            return self.sku_to_index[sku_id]
        except KeyError:
            raise KeyError(f"unknown SKU '{sku_id}': it is not in the label map; rebuild shards with it") from None

    def sku(self, index: int) -> str:
        return self._by_index()[index]

    def extend(self, sku_ids: Iterable[str]) -> list[str]:
        """Append unseen SKUs in the given order; returns the ones added."""
        added = []
        for sku_id in sku_ids:
            if sku_id not in self.sku_to_index:
                self.sku_to_index[sku_id] = len(self.sku_to_index)
                added.append(sku_id)
        return added

    def set_attributes(self, sku_id: str, brand: str | None, category: str | None) -> None:
        if brand:
            self.brands[sku_id] = brand
        if category:
            self.categories[sku_id] = category

    def attribute_vocab(self, kind: str) -> list[str]:
        """Sorted distinct brand or category values (for auxiliary heads)."""
        values = self.brands if kind == "brand" else self.categories
        return sorted(set(values.values()))

    def attribute_targets(self, kind: str) -> list[int] | None:
        """Per class index, the index of its brand/category, or None when not every SKU has one."""
        values = self.brands if kind == "brand" else self.categories
        if not values or len(values) != len(self):
            return None
        vocab = {v: i for i, v in enumerate(self.attribute_vocab(kind))}
        return [vocab[values[s]] for s in self._by_index()]

    def to_dict(self) -> dict:
        return {
            "sku_to_index": dict(self.sku_to_index),
            "brands": dict(self.brands),
            "categories": dict(self.categories),
        }

    @classmethod
    def from_dict(cls, data: dict) -> LabelMap:
        if "sku_to_index" not in data:
            # a bare {sku: index} mapping is accepted too
            data = {"sku_to_index": data}
        return cls(
            sku_to_index={str(k): int(v) for k, v in data["sku_to_index"].items()},
            brands=dict(data.get("brands", {})),
            categories=dict(data.get("categories", {})),
        )

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        """Read a label map JSON, or the label map inside a shard manifest.json."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(
                f"label map {path}: file not found; pass an existing label_map.json or manifest.json"
            ) from None
        except json.JSONDecodeError as exc:
            raise DataError(
                f"label map {path}: not valid JSON ({exc.msg} at line {exc.lineno}); pass a label_map.json or manifest.json"
            ) from None
        if "label_map" in data:
            data = data["label_map"]
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))
        return path
