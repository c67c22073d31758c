import json

import pytest

from skuvision.data.labels import LabelMap
from skuvision.errors import DataError


def test_extend_appends_and_never_reorders():
    lm = LabelMap()
    assert lm.extend(["b", "a", "c"]) == ["b", "a", "c"]
    before = dict(lm.sku_to_index)
    assert lm.extend(["a", "z", "0"]) == ["z", "0"]
    assert all(lm.index(s) == i for s, i in before.items())
    assert lm.index("z") == 3 and lm.index("0") == 4
    assert lm.skus == ["b", "a", "c", "z", "0"]


def test_round_trip_through_manifest_json(tmp_path):
    lm = LabelMap()
    lm.extend(["s1", "s2"])
    lm.set_attributes("s1", "Acme", "snacks")
    lm.set_attributes("s2", "Acme", "dairy")
    (tmp_path / "manifest.json").write_text(json.dumps({"label_map": lm.to_dict()}))
    again = LabelMap.load(tmp_path / "manifest.json")
    assert again == lm
    assert again.attribute_targets("category") == [1, 0]
    assert again.attribute_targets("brand") == [0, 0]


def test_gaps_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="0..N-1"):
        LabelMap({"a": 0, "b": 2})
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        LabelMap.load(bad)
    with pytest.raises(DataError, match="file not found"):
        LabelMap.load(tmp_path / "missing.json")
    with pytest.raises(KeyError, match="unknown SKU 'x'"):
        LabelMap().index("x")
