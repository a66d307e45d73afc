import math

import numpy as np
import pytest

from unimp_core.errors import UnimpError
from unimp_core.evaluation.metrics import (ABSENT, POPULARITY_EDGES, RANK_KS, item_counts, metrics_by_popularity,
                                           parse_exp_output, parse_rating, parse_slots, popularity_buckets,
                                           popularity_metrics, popularity_order, popularity_ranks, ranking_metrics,
                                           ranking_per_user, rating_metrics, selection_metrics,
                                           selection_per_sample, target_ranks)

# ----------------------------------------------------------------------------------------- ranking


def test_target_ranks_are_zero_based_positions():
    scores = [[0.1, 0.9, 0.5, 0.3]] * 3
    assert target_ranks(scores, [1, 2, 0]).tolist() == [0, 1, 3]


def test_target_ranks_count_ties_against_the_target():
    # item 2 ties with the target: it is counted above, so the target is 2nd, not 1st
    assert target_ranks([[1.0, 2.0, 2.0, 0.0]], [1]).tolist() == [1]
    assert target_ranks([[1.0, 2.0, 2.0, 0.0]], [2]).tolist() == [1]


def test_constant_scores_never_score_a_hit():
    n_items = 50
    ranks = target_ranks(np.zeros((4, n_items)), [0, 7, 21, 49])
    assert ranks.tolist() == [n_items - 1] * 4
    metrics = ranking_metrics(ranks)
    assert all(value == 0.0 for value in metrics.values())


def test_integer_scores_are_accepted():
    assert target_ranks(np.array([[3, 1, 2]]), [2]).tolist() == [1]


def test_exclusion_removes_history_but_never_the_target():
    scores = [[0.9, 0.8, 0.7, 0.6]]
    assert target_ranks(scores, [3]).tolist() == [3]
    assert target_ranks(scores, [3], exclude=[[0, 1]]).tolist() == [1]
    assert target_ranks(scores, [3], exclude=[[3, 0]]).tolist() == [2]  # target in its own history stays
    mask = np.array([[True, True, False, False]])
    assert target_ranks(scores, [3], exclude=mask).tolist() == [1]


def test_exclusion_per_user():
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.9, 0.8, 0.7, 0.6]])
    assert target_ranks(scores, [2, 2], exclude=[[0], []]).tolist() == [1, 2]
    assert target_ranks(scores, [2, 2], exclude=np.array([[0], [1]])).tolist() == [1, 1]  # (B, L) id array


@pytest.mark.parametrize("scores, targets, exclude, message", [
    ([[0.1, float("nan")]], [0], None, "scores contain NaN"),
    ([0.1, 0.2], [0], None, r"must be \(users, items\), got shape \(2,\)"),
    ([[0.1, 0.2]], [2], None, r"target item id is outside the catalogue 0\.\.1"),
    ([[0.1, 0.2]], [0, 1], None, "2 targets for 1 score rows"),
    ([[0.1, 0.2]], [0], [[5]], r"user row 0 holds an item id outside 0\.\.1"),
    ([[0.1, 0.2]], [0], np.ones((2, 2), bool), r"mask has shape \(2, 2\), scores have \(1, 2\)"),
    ([[0.1, 0.2]], [0], np.array([[0, 1]]), "must have dtype bool"),  # a 0/1 mask is ambiguous with id lists
])
def test_target_ranks_reject_bad_input(scores, targets, exclude, message):
    with pytest.raises(UnimpError, match=message):
        target_ranks(scores, targets, exclude)


def test_ranking_metrics_hand_computed():
    ranks = [0, 2, 25, ABSENT]  # first place, third place, beyond 20, not retrieved
    m = ranking_metrics(ranks)
    assert list(m) == [f"{name}@{k}" for name in ("HR", "NDCG", "MRR") for k in RANK_KS]
    assert m["HR@1"] == m["NDCG@1"] == m["MRR@1"] == 0.25
    assert m["HR@3"] == m["HR@20"] == 0.5
    assert m["NDCG@3"] == pytest.approx((1 + 1 / math.log2(4)) / 4)  # 0.375
    assert m["MRR@3"] == pytest.approx((1 + 1 / 3) / 4)
    assert m["NDCG@20"] == m["NDCG@3"] and m["MRR@20"] == m["MRR@3"]


def test_target_at_first_place_scores_one_everywhere():
    m = ranking_metrics([0])
    assert all(value == 1.0 for value in m.values())


def test_rank_equal_to_k_is_a_miss():
    per_user = ranking_per_user([5], ks=(5, 6))
    assert per_user["HR@5"].tolist() == [0.0] and per_user["HR@6"].tolist() == [1.0]
    assert per_user["NDCG@6"][0] == pytest.approx(1 / math.log2(7))
    assert per_user["MRR@6"][0] == pytest.approx(1 / 6)


def test_ranking_metrics_reject_empty_and_bad_input():
    with pytest.raises(UnimpError, match="no users"):
        ranking_metrics([])
    with pytest.raises(UnimpError, match=r"cut-offs k must be positive integers, got \(0,\)"):
        ranking_metrics([0], ks=(0,))
    with pytest.raises(UnimpError, match=r"ranks must be >= 0 \(or -1 for absent\), got -2"):
        ranking_per_user([-2])


# -------------------------------------------------------------------------------------- popularity

def test_item_counts():
    assert item_counts([0, 1, 1, 4], 5).tolist() == [1, 2, 0, 0, 1]
    with pytest.raises(UnimpError, match=r"training item id is outside the catalogue 0\.\.4"):
        item_counts([5], 5)


def test_popularity_order_breaks_ties_by_item_id():
    assert popularity_order([3, 5, 5, 0, 1]).tolist() == [1, 2, 0, 4, 3]


def test_popularity_ranks_and_exclusion():
    counts = [3, 5, 5, 0, 1]  # list: 1, 2, 0, 4, 3
    assert popularity_ranks(counts, [2, 3, 1]).tolist() == [1, 4, 0]
    assert popularity_ranks(counts, [3], exclude=[[1, 0]]).tolist() == [2]
    assert popularity_ranks(counts, [2], exclude=[[2, 1]]).tolist() == [0]  # the target is never removed
    assert popularity_ranks(counts, [3], exclude=[[3]]).tolist() == [4]


def test_popularity_matches_model_ranking_of_the_same_list():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 4, size=30)  # many ties
    targets = rng.integers(0, 30, size=12)
    history = [rng.choice(30, size=5, replace=False) for _ in targets]
    # the popularity list as strictly decreasing scores: count first, then lower id first
    scores = np.tile(counts * 100.0 - np.arange(30), (12, 1))
    expected = target_ranks(scores, targets, exclude=history)
    assert popularity_ranks(counts, targets, exclude=history).tolist() == expected.tolist()


def test_popularity_metrics_hand_computed():
    m = popularity_metrics([3, 5, 5, 0, 1], [1, 2, 3], ks=(1, 3))
    assert m["HR@1"] == pytest.approx(1 / 3)
    assert m["HR@3"] == pytest.approx(2 / 3)
    assert m["NDCG@3"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert m["MRR@3"] == pytest.approx((1 + 1 / 2) / 3)


# -------------------------------------------------------------------------- by the target's popularity


def test_popularity_bucket_labels():
    assert POPULARITY_EDGES == (5, 20) and popularity_buckets() == ["<5", "5-19", "20+"]
    assert popularity_buckets((1, 2, 10)) == ["<1", "1", "2-9", "10+"]
    for bad in ((), (0, 5), (5, 5), (20, 5)):
        with pytest.raises(UnimpError, match="increasing positive"):
            popularity_buckets(bad)


def test_metrics_by_popularity_hand_computed():
    # six users; their targets were seen 0, 4, 5, 19, 20 and 300 times in training
    ranks = [0, 3, ABSENT, 1, 0, 12]
    seen = [0, 4, 5, 19, 20, 300]
    by = metrics_by_popularity(ranks, seen, ks=(1, 5))
    assert list(by) == ["<5", "5-19", "20+"]
    assert by["<5"] == pytest.approx({"users": 2, "HR@1": 1 / 2, "HR@5": 2 / 2, "NDCG@1": 1 / 2,
                                      "NDCG@5": (1 + 1 / math.log2(5)) / 2, "MRR@1": 1 / 2,
                                      "MRR@5": (1 + 1 / 4) / 2})
    assert by["5-19"] == pytest.approx({"users": 2, "HR@1": 0.0, "HR@5": 1 / 2, "NDCG@1": 0.0,
                                        "NDCG@5": (1 / math.log2(3)) / 2, "MRR@1": 0.0, "MRR@5": (1 / 2) / 2})
    assert by["20+"] == pytest.approx({"users": 2, "HR@1": 1 / 2, "HR@5": 1 / 2, "NDCG@1": 1 / 2, "NDCG@5": 1 / 2,
                                       "MRR@1": 1 / 2, "MRR@5": 1 / 2})
    # the buckets' users add up, and their user-weighted means give back the overall figure
    overall = ranking_metrics(ranks, ks=(1, 5))
    for name, value in overall.items():
        assert sum(b["users"] * b[name] for b in by.values()) / len(ranks) == pytest.approx(value)


def test_metrics_by_popularity_empty_bucket_and_bad_input():
    by = metrics_by_popularity([0, 1], [30, 40], ks=(10,))
    assert by["<5"] == {"users": 0, "HR@10": None, "NDCG@10": None, "MRR@10": None}
    assert by["5-19"]["users"] == 0 and by["20+"] == {"users": 2, "HR@10": 1.0,
                                                      "NDCG@10": pytest.approx((1 + 1 / math.log2(3)) / 2),
                                                      "MRR@10": 0.75}
    with pytest.raises(UnimpError, match="3 target counts for 2 ranks"):
        metrics_by_popularity([0, 1], [1, 2, 3], ks=(10,))


# ------------------------------------------------------------------------------------------ rating

@pytest.mark.parametrize("text, expected", [
    ("rate_4 great product", 4),
    ("   rate_4    great", 4),
    ("rate_ 5", 5),
    ("rate_4great", 4),
    ("I would say rate_2", 2),
    ("rate_3 ok <|endofchunk|> rate_5", 3),
    ("<|endofchunk|> rate_4", None),
    ("great product", None),
    ("crate_4", None),
    ("rate_9 too high", None),
    ("rate_0", None),
    ("", None),
    (None, None),
])
def test_parse_rating(text, expected):
    assert parse_rating(text) == expected


def test_parse_exp_output_splits_rating_and_explanation():
    assert parse_exp_output("rate_4 great  product <|endofchunk|> junk") == (4, "great product")
    assert parse_exp_output("great product") == (None, "great product")
    assert parse_exp_output("rate_5") == (5, "")
    assert parse_exp_output(None) == (None, "")


def test_rating_metrics_exclude_policy():
    m = rating_metrics([4, None, 2, 5], [5, 3, 2, None], policy="exclude")
    assert m["RMSE"] == pytest.approx(math.sqrt(0.5))  # errors -1, 0
    assert m["MAE"] == pytest.approx(0.5)
    assert (m["scored"], m["unparsable"], m["no_reference"]) == (2, 1, 1)
    assert m["unparsable_policy"] == "exclude" and m["fill_value"] is None


def test_rating_metrics_fill_policy():
    m = rating_metrics([4, None, 2, 5], [5, 3, 2, None], policy="fill", fill_value=4.0)
    assert m["RMSE"] == pytest.approx(math.sqrt(2 / 3))  # errors -1, +1, 0
    assert m["MAE"] == pytest.approx(2 / 3)
    assert (m["scored"], m["unparsable"], m["no_reference"]) == (3, 1, 1)
    assert m["unparsable_policy"] == "fill" and m["fill_value"] == 4.0


def test_rating_metrics_nothing_scored_gives_none_not_a_number():
    m = rating_metrics([None, float("nan")], [4, 5])
    assert m["RMSE"] is None and m["MAE"] is None and m["scored"] == 0 and m["unparsable"] == 2


@pytest.mark.parametrize("kwargs", [{"policy": "fill"}, {"policy": "fill", "fill_value": float("nan")},
                                    {"policy": "mean"}])
def test_rating_metrics_reject_bad_policy(kwargs):
    with pytest.raises(UnimpError, match="needs a finite fill_value|must be 'exclude' or 'fill', got 'mean'"):
        rating_metrics([1], [1], **kwargs)


def test_rating_metrics_reject_length_mismatch():
    with pytest.raises(UnimpError, match="2 predicted ratings for 1 true ratings"):
        rating_metrics([1, 2], [1])


# --------------------------------------------------------------------------------------- selection

@pytest.mark.parametrize("text, expected", [
    ("s_0 s_2", (frozenset({0, 2}), 0)),
    ("s_0 s_0 great great", (frozenset({0}), 1)),
    ("s_1, s_2.", (frozenset({1, 2}), 0)),
    ("s_1 <|endofchunk|> s_2", (frozenset({1}), 0)),
    ("", (frozenset(), 0)),
    (None, (frozenset(), 0)),
])
def test_parse_slots(text, expected):
    assert parse_slots(text) == expected


def test_selection_metrics_hand_computed():
    predicted = [{0, 2}, {1}, set(), {0}]
    true = [{0}, {1, 2}, {0}, [0]]
    n_other = [0, 0, 0, 1]  # the last output also said one non-slot word
    per = selection_per_sample(predicted, true, n_other)
    assert per["precision"].tolist() == pytest.approx([0.5, 1.0, 0.0, 0.5])
    assert per["recall"].tolist() == pytest.approx([1.0, 0.5, 0.0, 1.0])
    assert per["f1"].tolist() == pytest.approx([2 / 3, 2 / 3, 0.0, 2 / 3])
    m = selection_metrics(predicted, true, n_other)
    assert m == pytest.approx({"precision": 0.5, "recall": 0.625, "f1": 0.5})


def test_selection_without_n_other_and_from_parsed_text():
    parsed = [parse_slots(t) for t in ("s_0 s_2", "s_1")]
    m = selection_metrics([p[0] for p in parsed], [[0, 2], [2]], [p[1] for p in parsed])
    assert m == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert selection_metrics([[1]], [[1]]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_selection_rejects_bad_input():
    with pytest.raises(UnimpError, match="selection sample 0 has no true slot"):
        selection_metrics([[0]], [[]])
    with pytest.raises(UnimpError, match="1 predicted selections for 2 true selections"):
        selection_metrics([[0]], [[0], [1]])
    with pytest.raises(UnimpError, match="no selection samples to score"):
        selection_metrics([], [])
