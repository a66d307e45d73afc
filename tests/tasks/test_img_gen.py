"""The img_gen task: prompt layout, exact code counts, history default, eval from rec instances."""

from __future__ import annotations

from dataclasses import replace

import re

import numpy as np

from tests.tasks.synthetic import make_dataset, tiny_dataset, words
from unimp_core.tasks import (BUILTIN_TASKS, TASKS, build_eval_samples, build_training_samples, context,
                              history_lengths, instance_table)
from unimp_core.tasks import img_gen

GRID = 4  # 2x2 codes in the hand-written tests, 4 per image
_ID = re.compile(r"(?:^|\s)ID ")


def n_history(text: str) -> int:
    return len(_ID.findall(text.split("Query:")[0]))


def with_codes(ctx, codes: dict[int, list[int]]):
    return replace(ctx, image_codes=codes)


def test_registered_after_the_others():
    assert BUILTIN_TASKS[:4] == ("rec", "search", "exp", "img_sel") and BUILTIN_TASKS[4] == "img_gen"
    assert "img_gen" in TASKS and instance_table("img_gen") == "rec" and instance_table("rec") == "rec"


def test_prompt_format_exact():
    ctx = with_codes(context(tiny_dataset()), {0: [1, 2, 3, 4], 2: [5, 6, 7, 8], 3: [9, 9, 0, 1]})
    seq = ctx.sequences[0]
    train = img_gen.make_sample(ctx, 0, seq, 3, "Lamps", 2, train=True)
    # item 1 has no codes: left out of the history; item 2 has no title: no Title part
    assert train.text == (
        "<image> ID img_5 img_6 img_7 img_8 <|endofchunk|> "
        "Query: Lamps What is the generated image ID to the query based on the history? "
        "<answer> img_9 img_9 img_0 img_1<|endofchunk|>")
    assert train.image_items == [2]
    ev = img_gen.make_sample(ctx, 0, seq, 3, "Lamps", 5, train=False)
    assert ev.text.startswith("<image> Title Red Hat ID img_1 img_2 img_3 img_4 <|endofchunk|> <image> ID img_5")
    assert ev.text.endswith("based on the history? <answer>") and ev.image_items == [0, 2]
    assert ev.answer == "img_9 img_9 img_0 img_1" and ev.meta["codes"] == [9, 9, 0, 1]


def _all_codes(n_items: int) -> dict[int, list[int]]:
    rng = np.random.default_rng(0)
    return {i: rng.integers(0, 32, GRID).tolist() for i in range(n_items) if i % 4 != 1}  # some items lack codes


def test_training_targets_have_codes_and_answers_have_exactly_grid_tokens():
    ds = make_dataset()
    ctx = with_codes(context(ds), _all_codes(30))
    samples = build_training_samples(ctx, ["img_gen"], seed=3)
    assert len(samples) > 10
    for s in samples:
        assert s.task == "img_gen" and s.meta["target"] in ctx.image_codes
        answer = words(s.text.rsplit("<answer>", 1)[1])
        assert answer[-1] == "<|endofchunk|>" and len(answer) == GRID + 1
        assert answer[:-1] == [f"img_{c}" for c in ctx.image_codes[s.meta["target"]]]
        # history length 2 by default: at most two `ID` chunks, each with exactly GRID codes
        chunks = s.text.split("Query:")[0].split("<|endofchunk|>")[:-1]
        assert len(chunks) <= 2 and all(len(c.rsplit("ID ", 1)[1].split()) == GRID for c in chunks)
        assert s.text.count("<image>") == len(s.image_items)
    assert max(n_history(s.text) for s in samples) == 2


def test_history_length_default_and_override():
    assert history_lengths(["rec", "img_gen"], 5) == {"rec": 5, "img_gen": 2}
    assert history_lengths(["rec", "img_gen"], 5, {"img_gen": 4}) == {"rec": 5, "img_gen": 4}
    ctx = with_codes(context(make_dataset(min_len=8)), _all_codes(30))
    longer = build_training_samples(ctx, ["img_gen"], {"img_gen": 6}, seed=0)
    assert max(n_history(s.text) for s in longer) > 2


def test_eval_samples_come_from_rec_instances_with_coded_targets():
    ds = make_dataset()
    codes = _all_codes(30)
    ctx = with_codes(context(ds), codes)
    rec = build_eval_samples(ds, "rec", "test", ctx=ctx)
    gen = build_eval_samples(ds, "img_gen", "test", ctx=ctx)
    coded = [s for s in rec if s.meta["target"] in codes]
    assert gen and len(gen) == len(coded) < len(rec)
    assert [(s.meta["user_id"], s.meta["target"]) for s in gen] == [(s.meta["user_id"], s.meta["target"]) for s in coded]
    assert all(s.answer == " ".join(f"img_{c}" for c in codes[s.meta["target"]]) for s in gen)


def test_no_codes_no_samples():
    ctx = context(make_dataset())
    assert ctx.image_codes == {} and build_training_samples(ctx, ["img_gen"]) == []
    assert build_eval_samples(make_dataset(), "img_gen", "test") == []
