import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from unimp_core.data.sources import netflix
from unimp_core.errors import UnimpError
from unimp_core.progress import Progress
from unimp_core.specs.data import PrepareSpec

TRAIN = {"0": [3, 1, 4], "1": [1, 5], "2": []}
VAL = {"0": [9], "1": [2]}
TEST = {"0": [2], "1": []}
# LLMRec's item_attribute.csv: headerless id,year,title; titles may be quoted or hold bare commas.
ATTR_CSV = ('1,2003,Dinosaur Planet\n2,NULL,"Isle of Man TT 2004 Review"\n3,1997,Character\n'
            '4,1994,"Paula Abdul\'s Get Up & Dance"\n5,2004,At Home Among Strangers, A Stranger Among His Own\n'
            '9,1991,Caf\xe9 au lait\n')


def _folder(tmp_path: Path, attributes: str = "csv") -> Path:
    root = tmp_path / "netflix"
    root.mkdir()
    for name, data in (("train.json", TRAIN), ("val.json", VAL), ("test.json", TEST)):
        (root / name).write_text(json.dumps(data))
    if attributes == "csv":
        (root / "item_attribute.csv").write_bytes(ATTR_CSV.encode("latin-1"))
    (root / "images").mkdir()
    for item in (1, 3):
        (root / "images" / f"{item}.jpg").write_bytes(b"\xff\xd8poster")
    (root / "images" / "4.PNG").write_bytes(b"png")
    (root / "images" / "notes.txt").write_text("not an image")
    return root


def _load(root: Path):
    return netflix.load(PrepareSpec(source="netflix", input=root), Progress())


def test_histories_in_train_val_test_order(tmp_path):
    raw = _load(_folder(tmp_path))
    rows = raw.interactions.select("user_key", "source_id", "timestamp").rows()
    assert rows == [
        ("netflix:0", "3", 0), ("netflix:0", "1", 1), ("netflix:0", "4", 2),
        ("netflix:1", "1", 0), ("netflix:1", "5", 1),
        ("netflix:0", "9", 3), ("netflix:1", "2", 2),
        ("netflix:0", "2", 4),
    ]
    assert [Path(s["file"]).name for s in raw.sources] == ["train.json", "val.json", "test.json", "item_attribute.csv"]


def test_item_attributes_from_csv_and_posters(tmp_path):
    root = _folder(tmp_path)
    items = {r["source_id"]: r for r in _load(root).items.to_dicts()}
    assert set(items) == {"1", "2", "3", "4", "5", "9"}
    assert items["1"]["title"] == "Dinosaur Planet" and items["1"]["description"] == "Released in 2003."
    assert items["2"]["title"] == "Isle of Man TT 2004 Review" and items["2"]["description"] is None
    assert items["4"]["title"] == "Paula Abdul's Get Up & Dance"
    assert items["5"]["title"] == "At Home Among Strangers, A Stranger Among His Own"
    assert items["9"]["title"] == "Caf\u00e9 au lait"  # Latin-1 file
    assert all(r["domain"] == "netflix" for r in items.values())
    assert items["1"]["image_path"] == str((root / "images" / "1.jpg").resolve())
    assert items["4"]["image_path"] == str((root / "images" / "4.PNG").resolve())
    assert items["2"]["image_path"] is None and items["9"]["image_path"] is None


def test_csv_with_header(tmp_path):
    root = _folder(tmp_path, attributes="none")
    (root / "item_attribute.csv").write_text("title,year,id\nDinosaur Planet,2003.0,1\n")
    items = {r["source_id"]: r for r in _load(root).items.to_dicts()}
    assert items["1"]["title"] == "Dinosaur Planet" and items["1"]["description"] == "Released in 2003."


@pytest.mark.parametrize("payload", [
    {1: {"year": 2003, "title": "Dinosaur Planet"}, 3: {"year": np.int64(1997), "title": "Character"}},
    {1: (2003, "Dinosaur Planet"), 3: (1997.0, "Character")},
    [(1, 2003, "Dinosaur Planet"), (3, 1997, "Character")],
    [{"id": 1, "year": "2003", "title": "Dinosaur Planet"}, {"id": 3, "year": None, "title": "Character"}],
    {"id": [1, 3], "year": [2003, float("nan")], "title": ["Dinosaur Planet", "Character"]},
    {"year": {1: 2003, 3: 1997}, "title": {1: "Dinosaur Planet", 3: "Character"}},
])
def test_item_attributes_from_pickles(tmp_path, payload):
    root = _folder(tmp_path, attributes="none")
    (root / "item_attribute.pkl").write_bytes(pickle.dumps(payload))
    items = {r["source_id"]: r for r in _load(root).items.to_dicts()}
    assert items["1"]["title"] == "Dinosaur Planet" and items["1"]["description"] == "Released in 2003."
    assert items["3"]["title"] == "Character"
    assert items["2"]["title"] is None  # interacted but not described: kept without text


def test_positional_rows_use_the_position_as_id(tmp_path):
    root = _folder(tmp_path, attributes="none")
    (root / "item_attribute.pickle").write_bytes(pickle.dumps([(2000, "Zero"), (2003, "One"), "Two"]))
    items = {r["source_id"]: r for r in _load(root).items.to_dicts()}
    assert items["1"]["title"] == "One" and items["2"]["title"] == "Two"


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_attribute_pickle_is_refused(tmp_path):
    root = _folder(tmp_path, attributes="none")
    marker = tmp_path / "pwned"
    (root / "item_attribute.pkl").write_bytes(pickle.dumps({1: {"year": 2003, "title": _Evil(marker)}}))
    with pytest.raises(UnimpError, match=r"item_attribute\.pkl: refusing to load global (posix|os|nt)\.system"):
        _load(root)
    assert not marker.exists()


def test_path_like_ids_never_reach_outside(tmp_path):
    root = _folder(tmp_path, attributes="none")
    (tmp_path / "secret.jpg").write_bytes(b"outside the poster folder")
    (root / "train.json").write_text(json.dumps({"0": [1, "../secret"]}))
    (root / "item_attribute.pkl").write_bytes(pickle.dumps({"../secret": ("2000", "Sneaky")}))
    items = {r["source_id"]: r for r in _load(root).items.to_dicts()}
    assert items["../secret"]["title"] == "Sneaky" and items["../secret"]["image_path"] is None
    # A poster that is a link to a file outside the folder is refused as well.
    (root / "images" / "1.jpg").unlink()
    (root / "images" / "1.jpg").symlink_to(tmp_path / "secret.jpg")
    raw = _load(root)
    assert raw.items.filter(raw.items["source_id"] == "1")["image_path"].to_list() == [None]
    assert raw.skipped["image path outside the images folder (image ignored)"] == 1


def test_errors(tmp_path):
    root = _folder(tmp_path)
    (root / "val.json").write_text(json.dumps({"0": 5}))
    with pytest.raises(UnimpError, match=r"val\.json: user '0': expected a list of item ids, got int"):
        _load(root)
    (root / "val.json").write_text(json.dumps({"0": [[1]]}))
    with pytest.raises(UnimpError, match=r"val\.json: user '0': item ids must be integers"):
        _load(root)
    (root / "val.json").unlink()  # val/test are optional
    assert _load(root).interactions.height == 6
    (root / "item_attribute.csv").write_text("1,2003\n")
    with pytest.raises(UnimpError, match=r"item_attribute\.csv: row 1: expected id,year,title"):
        _load(root)
    (root / "item_attribute.csv").unlink()
    with pytest.raises(UnimpError, match="no item attribute file"):
        _load(root)
    (root / "train.json").unlink()
    with pytest.raises(UnimpError, match=r"train\.json: not found"):
        _load(root)
