import numpy as np
import pytest

from unimp_core.data.store import protocol_of
from unimp_core.errors import UnimpError
from unimp_core.tasks import base
from unimp_core.tasks.base import Sample, TaskContext, clean, describe_item, pick_target
from unimp_core.tokens import rating_value

from .synthetic import make_dataset, tiny_dataset


@pytest.mark.parametrize("raw, expected", [(1.0, 1), (2.5, 3), (2.49, 2), (4.5, 5), (0.2, 1), (7.0, 5), (-3, 1)])
def test_rating_is_clipped_then_rounded_half_up(raw, expected):
    assert rating_value(raw) == expected


def test_clean_removes_markers_and_caps_words():
    assert clean("a <image> b\n\tc <|endofchunk|> <answer>d") == "a b c d"
    assert clean("one two three", max_words=2) == "one two"
    assert clean(None) == "" and clean("") == ""


def test_describe_item_omits_missing_fields():
    row = {"category": "Hats", "price": 9.5, "brand": None, "title": "Red Hat"}
    assert describe_item(row) == "Category Hats Price 9.50 Title Red Hat"
    assert describe_item({"category": "", "price": float("nan"), "brand": "B", "title": None}) == "Brand B"
    assert describe_item({}) == ""


def test_history_text_and_images():
    ctx = TaskContext.from_dataset(tiny_dataset())
    text, images = ctx.history([0, 1, 2])
    assert text == (
        "<image> Category Hats Price 9.50 Brand Acme Title Red Hat <answer> item_0<|endofchunk|> "
        "Category Mugs Title Blue Mug <answer> item_1<|endofchunk|> "
        "<image> Price 3.00 Brand Zed <answer> item_2<|endofchunk|>"
    )
    assert images == [0, 2]  # item 1 has no picture: no <image>, no slot


def test_context_training_prefixes_follow_protocol():
    loo = TaskContext.from_dataset(make_dataset("leave-one-out"))
    assert loo.protocol == "leave-one-out"
    assert all(loo.train_lengths[u] == len(loo.sequences[u]) - 2 for u in loo.train_lengths)
    ds = make_dataset("user-split")
    us = TaskContext.from_dataset(ds)
    train_users = set(ds.users.filter(ds.users["split"] == "train")["user_id"].to_list())
    assert set(us.train_lengths) == train_users
    assert all(us.train_lengths[u] == len(us.sequences[u]) for u in us.train_lengths)


def test_protocol_of_a_manifest():
    ds = make_dataset("leave-one-out")
    assert protocol_of(ds) == "leave-one-out"
    ds.manifest = {"schema_version": 1, "unimp_version": "0.0.9"}  # an older folder: one error naming its version
    with pytest.raises(UnimpError, match=r"no protocol: a dataset folder of unimp 0\.0\.9 .*rerun `unimp prepare`"):
        protocol_of(ds)
    ds.manifest = {"protocol": "random"}
    with pytest.raises(UnimpError, match="unknown protocol"):
        protocol_of(ds)


def test_pick_target_prefers_full_windows():
    rng = np.random.default_rng(0)
    draws = {pick_target(rng, 10, 5) for _ in range(300)}
    assert draws == {5, 6, 7, 8, 9}
    # shorter than a window: any position >= 1
    assert {pick_target(rng, 3, 5) for _ in range(100)} == {1, 2}
    assert pick_target(rng, 1, 5) is None
    valid = np.array([True, False, True, False, False, False])
    assert {pick_target(rng, 6, 5, valid) for _ in range(50)} == {2}
    assert pick_target(rng, 6, 5, np.zeros(6, dtype=bool)) is None


def test_pick_target_short_last_takes_a_short_users_whole_prefix():
    rng = np.random.default_rng(0)
    assert {pick_target(rng, 4, 5, short="last") for _ in range(20)} == {3}
    assert pick_target(rng, 1, 5, short="last") is None
    assert {pick_target(rng, 10, 5, short="last") for _ in range(300)} == set(range(5, 10))  # full windows: random


def test_draw_negatives_avoids_seen_items():
    rng = np.random.default_rng(0)
    for _ in range(50):
        neg = base.draw_negatives(rng, 10, {0, 1, 2, 3, 4, 5, 6}, 2)
        assert len(set(neg)) == 2 and not set(neg) & {0, 1, 2, 3, 4, 5, 6}
    assert base.draw_negatives(rng, 5, {0, 1, 2, 3}, 2) is None
    big = base.draw_negatives(rng, 1000, {1, 2}, 3)
    assert len(set(big)) == 3 and not set(big) & {1, 2}


def test_with_answer_completes_an_eval_sample():
    s = Sample("rec", "x <answer>", [], answer="item_3", meta={})
    assert s.with_answer().text == "x <answer> item_3<|endofchunk|>"
    assert s.with_answer().answer is None
