import numpy as np
import polars as pl
import pytest

from unimp_core.data import process
from unimp_core.prepare import eval_instances


def _inter(rows):
    return pl.DataFrame(rows, schema=["user_key", "source_id", "timestamp"], orient="row")


def test_kcore_reaches_a_fixed_point():
    # u3 has 2 items; dropping u3 leaves item c with 1 user, whose removal drops u2 below 2 ...
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 1), ("u2", "c", 2), ("u3", "c", 1), ("u3", "b", 2),
            ("u4", "d", 1)]
    out = process.kcore(_inter(rows), user_core=2, item_core=2)
    users = out.group_by("user_key").len()
    items = out.group_by("source_id").len()
    assert users["len"].min() >= 2 and items["len"].min() >= 2
    assert "u4" not in out["user_key"].to_list()
    # A second pass removes nothing: it is a fixed point.
    assert process.kcore(out, 2, 2).height == out.height


def test_kcore_cascade_empties():
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 1), ("u2", "c", 2)]
    # b and c have 1 user each -> removed -> users drop to 1 item -> removed -> a drops too.
    assert process.kcore(_inter(rows), 2, 2).height == 0


def test_tie_break_is_seeded_random_not_by_item_id():
    rows = [("u", f"i{k:02d}", 100) for k in range(20)]
    a = process.order_interactions(_inter(rows), seed=1)["source_id"].to_list()
    b = process.order_interactions(_inter(rows), seed=1)["source_id"].to_list()
    c = process.order_interactions(_inter(rows), seed=2)["source_id"].to_list()
    assert a == b and a != c
    assert a != sorted(a)


def test_order_keeps_time_order_and_drops_nulls():
    df = pl.DataFrame({"user_key": ["u", "u", "u", None], "source_id": ["b", "a", None, "x"],
                       "timestamp": [5, 1, 3, 2]})
    from collections import Counter

    skipped = Counter()
    out = process.order_interactions(df, 0, skipped)
    assert out["source_id"].to_list() == ["a", "b"]
    assert skipped["missing user, item or timestamp"] == 2


def test_reindex_is_seeded_permutation():
    inter = _inter([(f"u{u}", f"i{i:03d}", i) for u in range(3) for i in range(50)])
    items = pl.DataFrame({"source_id": [f"i{i:03d}" for i in range(50)], "title": [f"t{i}" for i in range(50)]})
    out, its = process.reindex(inter, items, seed=42)
    assert sorted(its["item_id"].to_list()) == list(range(50))
    assert its["item_id"].to_list() == list(range(50))  # sorted by id
    first_user = out.filter(pl.col("user_id") == 0)["item_id"].to_list()
    assert first_user != list(range(50))  # first-appearance order would leak the answer
    # titles follow their item
    joined = out.join(its.select("item_id", "title"), on="item_id")
    assert (joined["title"].str.slice(1).cast(int) == joined["source_id"].str.slice(1).cast(int)).all()
    assert sorted(out["user_id"].unique().to_list()) == [0, 1, 2]


def test_user_split_ratios_and_seed():
    users = pl.DataFrame({"user_id": list(range(100)), "user_key": [f"u{i}" for i in range(100)]})
    s = process.assign_splits(users, "user-split", (0.8, 0.1, 0.1), 42)
    counts = s.group_by("split").len().sort("split")
    assert dict(zip(counts["split"], counts["len"])) == {"test": 10, "train": 80, "valid": 10}
    expected = np.random.default_rng(42).permutation(100)
    assert s.filter(pl.col("user_id") == int(expected[0]))["split"][0] == "train"
    loo = process.assign_splits(users, "leave-one-out", (0.8, 0.1, 0.1), 42)
    assert set(loo["split"]) == {"all"}


@pytest.fixture
def small():
    rng = np.random.default_rng(0)
    rows = []
    for u in range(30):
        for t in range(8):
            rows.append((u, int(rng.integers(40)), t, float(rng.integers(1, 6)), "nice" if t % 2 else None))
    inter = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "rating", "explanation"], orient="row")
    items = pl.DataFrame({"item_id": list(range(40)), "category": [f"Cat > {i % 4}" for i in range(40)]})
    users = inter.group_by("user_id", maintain_order=True).agg(pl.len().cast(pl.Int64).alias("length"))
    return inter, items, users


def test_eval_instances_leave_one_out(small):
    inter, items, users = small
    users = users.with_columns(pl.lit("all").alias("split"))
    inst = eval_instances(inter, items, users, "leave-one-out", 42)
    seqs = inter.group_by("user_id", maintain_order=True).agg("item_id")
    seq = dict(zip(seqs["user_id"], seqs["item_id"].to_list()))
    rec = inst["rec"]
    test = rec.filter(pl.col("split") == "test")
    valid = rec.filter(pl.col("split") == "valid")
    assert test.height == valid.height == 30
    for u, pos, target in test.select("user_id", "position", "target").iter_rows():
        assert pos == 7 and target == seq[u][-1]
    for u, pos, target in valid.select("user_id", "position", "target").iter_rows():
        assert pos == 6 and target == seq[u][-2]
    sel = inst["img_sel"]
    for u, pos, cands, answers in sel.select("user_id", "position", "candidates", "answers").iter_rows():
        assert len(cands) == 3 and set(answers) <= set(cands) and 1 <= len(answers) <= 2
        negatives = set(cands) - set(answers)
        assert not negatives & set(seq[u]), "negatives must never come from the user's history"
        assert answers == seq[u][pos:pos + len(answers)]
    assert set(inst["search"]["query"].to_list()) <= {f"Cat > {i}" for i in range(4)}
    exp = inst["exp"]
    assert exp.height > 0 and (exp["explanation"] == "nice").all()
    # drawn once, seeded: the same call gives the same instances
    again = eval_instances(inter, items, users, "leave-one-out", 42)
    assert again["img_sel"].equals(sel)
