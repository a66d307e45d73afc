import gzip
import json
import os
import pickle

import polars as pl
import pytest

from unimp_core.data.explanations import load_explanations
from unimp_core.errors import UnimpError


def _rows(df: pl.DataFrame) -> list[tuple]:
    return df.rows()


def test_sentires_reviews_pickle(tmp_path):
    # The PETER/Sentires layout: template = (feature, adjective, sentence, score).
    reviews = [
        {"user": "A1", "item": "B001", "rating": 5, "template": ("color", "nice", "the color is very nice", 1),
         "predicted": "ignored"},
        {"user": "A2", "item": "B002", "rating": 3, "template": ["smell", "strong", "  it smells strong ", -1]},
        {"user": "A3", "item": "B003", "rating": 4},  # no template: nothing to learn from, left out
        {"user": 17, "item": 42, "rating": 1.0, "template": ("size", "small", "too small for me", 1)},
    ]
    path = tmp_path / "reviews.pickle"
    path.write_bytes(pickle.dumps(reviews))
    df = load_explanations(path)
    assert df.schema == {"raw_user": pl.Utf8, "source_id": pl.Utf8, "explanation": pl.Utf8}
    assert _rows(df) == [
        ("A1", "B001", "the color is very nice"),
        ("A2", "B002", "it smells strong"),
        ("17", "42", "too small for me"),
    ]


def test_p5_exp_splits(tmp_path):
    splits = {
        "train": [{"reviewerID": "U1", "asin": "I1", "explanation": "great for dry skin", "feature": "skin"}],
        "val": [{"reviewerID": "U2", "asin": "I2", "explanation": "lasts all day", "feature": "day"}],
        "test": [{"reviewerID": "U3", "asin": "I3", "explanation": "", "feature": "x"}],
    }
    path = tmp_path / "exp_splits.pkl"
    path.write_bytes(pickle.dumps(splits, protocol=4))
    assert _rows(load_explanations(path)) == [("U1", "I1", "great for dry skin"), ("U2", "I2", "lasts all day")]


def test_json_lines_and_array(tmp_path):
    lines = [
        {"user": "u1", "item": "i1", "explanation": "fits well"},
        {"user": "u2", "item": "i2", "template": ["fit", "loose", "a bit loose", 1]},
        {"user": "u3", "item": "i3", "template": "plain sentence"},
    ]
    jl = tmp_path / "exp.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    expected = [("u1", "i1", "fits well"), ("u2", "i2", "a bit loose"), ("u3", "i3", "plain sentence")]
    assert _rows(load_explanations(jl)) == expected
    arr = tmp_path / "exp.json"
    arr.write_text(json.dumps(lines, indent=1))
    assert _rows(load_explanations(arr)) == expected
    gz = tmp_path / "exp.jsonl.gz"
    gz.write_bytes(gzip.compress(jl.read_bytes()))
    assert _rows(load_explanations(gz)) == expected


def test_record_without_user_names_its_line(tmp_path):
    path = tmp_path / "exp.jsonl"
    path.write_text('{"user": "u1", "item": "i1", "explanation": "ok"}\n{"item": "i2", "explanation": "no user"}\n')
    with pytest.raises(UnimpError, match=r"exp\.jsonl: line 2: no user id .*keys are: item, explanation"):
        load_explanations(path)
    path.write_text('{"user": "u1", "item": "i1", "explanation": "ok"}\nnot json\n')
    with pytest.raises(UnimpError, match=r"exp\.jsonl: line 2: not JSON"):
        load_explanations(path)


def test_wrong_shapes_and_missing_file(tmp_path):
    path = tmp_path / "reviews.pickle"
    path.write_bytes(pickle.dumps("just a string"))
    with pytest.raises(UnimpError, match="expected a list of records"):
        load_explanations(path)
    path.write_bytes(pickle.dumps([("u", "i", "tuple rows are not records")]))
    with pytest.raises(UnimpError, match="record 0: expected a mapping, got tuple"):
        load_explanations(path)
    with pytest.raises(UnimpError, match="explanation file not found"):
        load_explanations(tmp_path / "absent.pickle")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_explanation_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "reviews.pickle"
    path.write_bytes(pickle.dumps([{"user": "u", "item": "i", "template": ("a", "b", _Evil(marker), 1)}]))
    with pytest.raises(UnimpError, match="refusing to load global"):
        load_explanations(path)
    assert not marker.exists()
