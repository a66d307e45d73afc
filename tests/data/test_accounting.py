"""The accounting invariant: every interaction row read is kept or counted once under a reason.

A property test writes messy tables (missing, non-numeric, non-finite, out-of-range and duplicate values,
ragged lines, Latin-1 or BOM-prefixed files) and checks `read = kept + sum(skipped)` from the source
through the k-core, and that no row the table itself marks as bad is kept.
"""

import csv
import gzip
import io
import math

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unimp_core.prepare import build_dataset, check_accounting
from unimp_core.data.sources import files
from unimp_core.progress import Progress
from unimp_core.specs.data import FilesSpec, PrepareSpec

HEADER = ["user", "item", "timestamp", "rating", "review"]
TEXT = st.text(alphabet="ab é,\"'\t;", max_size=3)
RATINGS = st.one_of(st.sampled_from(["", "1", "3", "4.5", "5", " 2 ", "$3", "nan", "NaN", "inf", "-inf", "0",
                                     "7", "-1", "five", "1e400"]), TEXT)
STAMPS = st.one_of(st.integers(1_600_000_000, 1_600_000_005).map(str),
                   st.sampled_from(["", "garbage", "2021-03-04", "2021-03-04 10:00", "1.5", "-3"]), TEXT)
ROW = st.tuples(st.sampled_from(["u1", "u2", "u3", "", " ", "ü"]), st.sampled_from(["i1", "i2", "i3", "", "ï"]),
                STAMPS, RATINGS, st.integers(-2, 2))  # the last: fields to add (> 0) or drop (< 0) -> ragged


def _clean_rows() -> list[list[str]]:
    """Two users who both bought two items: the dataset is never empty under a 2/2 k-core."""
    return [[u, i, str(1_500_000_000 + n), "4", ""] for n, (u, i) in
            enumerate([("c1", "ci1"), ("c1", "ci2"), ("c2", "ci1"), ("c2", "ci2")])]


def _is_number(text: str) -> float | None:
    try:
        return float(text.strip().replace("$", ""))
    except ValueError:
        return None


def _surely_bad(row: list[str]) -> bool:
    """Rows no correct reading keeps: ragged, no user or item, or a rating that is not finite or not in 1..5."""
    if len(row) != len(HEADER):
        return True
    user, item, _, rating, _ = row
    value = _is_number(rating) if rating.strip() else None
    return (not user.strip() or not item.strip()
            or (value is not None and (not math.isfinite(value) or not 1 <= value <= 5)))


def _write(rows: list[list[str]], tmp_path, encoding: str, kind: str):
    buf = io.StringIO()
    csv.writer(buf, delimiter="\t" if kind == "tsv" else ",", lineterminator="\n").writerows([HEADER] + rows)
    text = buf.getvalue()
    if encoding == "latin-1":
        data = text.encode("latin-1")
    else:
        data = text.encode("utf-8-sig" if encoding == "bom" else "utf-8")
    path = tmp_path / f"inter.{kind}" if kind != "csv.gz" else tmp_path / "inter.csv.gz"
    path.write_bytes(gzip.compress(data) if kind == "csv.gz" else data)
    return path


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messy=st.lists(ROW, max_size=25), encoding=st.sampled_from(["utf-8", "bom", "latin-1"]),
       kind=st.sampled_from(["csv", "tsv", "csv.gz"]), core=st.integers(1, 2))
def test_every_row_read_is_kept_or_counted_once(tmp_path, messy, encoding, kind, core):
    rows = _clean_rows()
    for n, (user, item, stamp, rating, extra) in enumerate(messy):
        row = [user, item, stamp, rating, f"row{n}"]
        rows.append(row + ["x"] * extra if extra > 0 else row[:len(row) + extra])
    path = _write(rows, tmp_path, encoding, kind)
    spec = PrepareSpec(source="files", files=FilesSpec(interactions=path), user_core=core, item_core=core)

    raw = files.load(spec, Progress())
    assert raw.read == len(rows)
    assert raw.read == raw.interactions.height + sum(raw.row_skips.values())
    ds, info = build_dataset(raw, spec)
    accounting = info["rows"]
    assert accounting["read"] == len(rows) and accounting["kept"] == ds.interactions.height
    check_accounting(accounting)

    kept = [tag for tag in ds.interactions["review"].to_list() if tag]
    assert len(kept) == len(set(kept))  # no row kept twice
    bad = {row[4] for row in rows if len(row) > 4 and _surely_bad(row)}
    assert not bad & set(kept)  # no row kept that was also counted as skipped


def test_the_accounting_is_in_the_manifest_and_printed(cli, tmp_path):
    inter = tmp_path / "inter.csv"
    inter.write_text("user,item,timestamp,rating\n" + "".join(
        f"u{u},i{i},{100 * u + i},{r}\n" for u in range(4) for i, r in enumerate(["5", "", "9", "4", "3"])))
    result = cli("prepare", "--source", "files", "--interactions", str(inter), "--no-images", "--user-core", "4",
                 "--item-core", "1", "--out", str(tmp_path / "ds"), "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    from unimp_core.data.store import read_manifest

    rows = read_manifest(tmp_path / "ds")["rows"]
    assert rows == {"read": 20, "kept": 16, "skipped": {"rating outside 1..5 (see --rating-scale)": 4}}
    assert "20 read = 16 kept + 4 skipped" in result.output


def test_a_broken_accounting_is_refused():
    with pytest.raises(AssertionError, match="10 read but 9 kept or skipped"):
        check_accounting({"read": 10, "kept": 7, "skipped": {"x": 2}})
