import numpy as np
import pytest

from unimp_core.errors import UnimpError
from unimp_core.tasks import (TASKS, TaskContext, build_eval_samples, build_training_samples, context,
                              curriculum_mix, curriculum_tasks)

from .synthetic import make_dataset, tiny_dataset, words

ALL = ["rec", "search", "exp", "img_sel"]


def _check_consistent(sample, ctx, train):
    assert sample.text.count("<image>") == len(sample.image_items)
    assert all(ctx.has_image[i] for i in sample.image_items)
    assert "Evil" not in sample.text or "Evil title" in sample.text  # markers stripped from item 5's title
    if train:
        assert sample.text.endswith("<|endofchunk|>") and sample.answer is None
    else:
        assert sample.text.endswith("<answer>") and sample.answer
    # every <answer> is closed before the next one opens (labels rely on it)
    depth = 0
    for tok in words(sample.text):
        if tok == "<answer>":
            assert depth == 0
            depth = 1
        elif tok == "<|endofchunk|>":
            depth = 0


@pytest.mark.parametrize("protocol", ["user-split", "leave-one-out"])
def test_every_sample_is_consistent(protocol):
    ds = make_dataset(protocol)
    ctx = context(ds)
    samples = build_training_samples(ctx, ALL, history_len=4, seed=3, epoch=1)
    assert {s.task for s in samples} == set(ALL)
    for s in samples:
        _check_consistent(s, ctx, train=True)
    for task in ALL:
        for split in ("valid", "test"):
            for s in build_eval_samples(ds, task, split, history_len=4, ctx=ctx):
                _check_consistent(s, ctx, train=False)
                assert s.meta["split"] == split


def test_rec_training_sample_exact_text():
    ctx = TaskContext.from_dataset(tiny_dataset())
    [s] = TASKS["rec"].training(ctx, np.random.default_rng(0), 2)  # full windows: target 2 or 3
    if s.meta["target"] == 2:
        expected_hist = ("<image> Category Hats Price 9.50 Brand Acme Title Red Hat <answer> item_0<|endofchunk|> "
                         "Category Mugs Title Blue Mug <answer> item_1<|endofchunk|>")
        images = [0]
    else:
        expected_hist = ("Category Mugs Title Blue Mug <answer> item_1<|endofchunk|> "
                         "<image> Price 3.00 Brand Zed <answer> item_2<|endofchunk|>")
        images = [2]
    t = s.meta["target"]
    assert s.text == f"{expected_hist} What is the next item recommended to the user? <answer> item_{t}<|endofchunk|>"
    assert s.image_items == images


def test_rec_sequence_layout_exact_text():
    """The items back to back in one answer span, each followed by its content, no question and no end
    marker; the eval prompt stops right after the last history item's content, where training predicted
    every next item."""
    ctx = TaskContext.from_dataset(tiny_dataset()).with_prompts("sequence")
    seq = ctx.sequences[0]
    train = TASKS["rec"].training(ctx, np.random.default_rng(0), 2)[0]
    t = train.meta["target"]
    prefix = "<answer> "
    if t == 2:
        hist = "item_0 <image> Category Hats Price 9.50 Brand Acme Title Red Hat item_1 Category Mugs Title Blue Mug"
        images = [0]
    else:
        hist = "item_1 Category Mugs Title Blue Mug item_2 <image> Price 3.00 Brand Zed"
        images = [2]
    assert train.text == f"{prefix}{hist} item_{t}" and train.image_items == images
    from unimp_core.tasks import rec

    ask = rec.make_sample(ctx, 0, seq, 2, 2, train=False)
    assert ask.text == prefix + "item_0 <image> Category Hats Price 9.50 Brand Acme Title Red Hat item_1 Category Mugs Title Blue Mug"
    assert ask.answer == "item_2"


def test_items_without_descriptions_are_their_ids_and_images():
    """describe_items off: the sequence layout costs one token an item (and its image), however much
    text the catalogue holds."""
    ctx = TaskContext.from_dataset(tiny_dataset()).with_prompts("sequence", describe_items=False)
    from unimp_core.tasks import rec

    ask = rec.make_sample(ctx, 0, ctx.sequences[0], 2, 2, train=False)
    assert ask.text == "<answer> item_0 <image> item_1"
    assert ask.image_items == [0]


def test_sequence_layout_trains_the_most_recent_window():
    ctx = TaskContext.from_dataset(tiny_dataset()).with_prompts("sequence", describe_items=False)
    for seed in range(3):
        for s in TASKS["rec"].training(ctx, np.random.default_rng(seed), 1):
            assert s.meta["position"] == ctx.train_lengths[s.meta["user_id"]] - 1


def test_semantic_ids_name_every_item_by_its_code_tuple():
    """Every task names items through TaskContext.item_name: rec/search answer with the target's code tuple,
    the histories (rec, search, img_sel) reconstruct each item's; no item_<i> is left."""
    from unimp_core.itemcodes.codes import ItemCodes

    ds = make_dataset("leave-one-out")
    tuples = tuple((i // 8, (i // 2) % 4, i % 2) for i in range(ds.items.height))
    ctx = context(ds, ItemCodes(levels=2, codes=8, collision_codes=2, tuples=tuples))
    assert ctx.item_name(13) == "<a_1><b_2><c_1>" and context(ds).item_name(13) == "item_13"
    [rec] = TASKS["rec"].training(TaskContext.from_dataset(tiny_dataset()).with_item_codes(
        ItemCodes(1, 4, 1, ((0, 0), (1, 0), (2, 0), (3, 0)))), np.random.default_rng(0), 2)
    t = rec.meta["target"]
    assert rec.text.endswith(f"What is the next item recommended to the user? <answer> <a_{t}><b_0><|endofchunk|>")
    assert f"<answer> <a_{t - 1}><b_0><|endofchunk|>" in rec.text  # the history's last item
    samples = build_training_samples(ctx, ALL, history_len=4, seed=3, epoch=1)
    for task in ALL:
        samples += build_eval_samples(ds, task, "test", 4, ctx)
    for sample in samples:
        assert "item_" not in sample.text and "item_" not in (sample.answer or "")
        if sample.task in ("rec", "search"):
            name = ctx.item_name(sample.meta["target"])
            assert sample.answer == name if sample.answer else sample.text.endswith(f"<answer> {name}<|endofchunk|>")


def test_exp_training_sample_exact_text():
    ctx = TaskContext.from_dataset(tiny_dataset())
    # targets need an explanation: positions 2 ("ok") and 3; with history_len 1 both are full windows
    seen = set()
    for seed in range(20):
        [s] = TASKS["exp"].training(ctx, np.random.default_rng(seed), 1)
        seen.add(s.meta["target"])
        if s.meta["target"] == 3:
            assert s.text == (
                "<image> Price 3.00 Brand Zed <answer> ok<|endofchunk|> "  # rating missing: no rate token
                "<image> Category Lamps Price 20.00 Brand Lumo Title Lamp "
                "What is the rating and explanation for the item? <answer> rate_5 bright and tall<|endofchunk|>"
            )
            assert s.image_items == [2, 3]
        else:
            assert s.text == (
                "Category Mugs Title Blue Mug <answer> rate_3<|endofchunk|> "  # 2.5 rounds half up, no explanation
                "<image> Price 3.00 Brand Zed "
                "What is the rating and explanation for the item? <answer> ok<|endofchunk|>"
            )
    assert seen == {2, 3}


def test_search_uses_target_category_and_skips_items_without_one():
    ctx = TaskContext.from_dataset(tiny_dataset())
    for seed in range(20):
        [s] = TASKS["search"].training(ctx, np.random.default_rng(seed), 5)
        # item 2 has no category: the only targets are 1 and 3
        assert s.meta["target"] in (1, 3)
        assert f"Query: {ctx.item_category[s.meta['target']]} What is the related item ID" in s.text
        assert s.text.endswith(f"<answer> item_{s.meta['target']}<|endofchunk|>")


def test_img_sel_training_candidates():
    ds = make_dataset("user-split", n_items=40)
    ctx = context(ds)
    samples = TASKS["img_sel"].training(ctx, np.random.default_rng(1), 5)
    assert samples and {len(s.meta["answers"]) for s in samples} == {1, 2}
    for s in samples:
        seq = ctx.sequences[s.meta["user_id"]]
        cands, answers, pos = s.meta["candidates"], s.meta["answers"], s.meta["position"]
        assert len(cands) == 3 and len(set(cands)) == 3
        assert answers == seq[pos:pos + len(answers)].tolist()
        negatives = set(cands) - set(answers)
        assert not negatives & set(seq.tolist())  # never from the user's history
        slots = sorted(cands.index(a) for a in answers)
        assert s.text.endswith("<answer> " + " ".join(f"s_{j}" for j in slots) + "<|endofchunk|>")
        for j, c in enumerate(cands):
            assert f"Selection s_{j} {ctx.item_desc[c]}" in s.text


def test_img_sel_eval_answer_matches_instances():
    ds = make_dataset("leave-one-out")
    table = ds.instances["img_sel"].filter(ds.instances["img_sel"]["split"] == "test")
    samples = build_eval_samples(ds, "img_sel", "test")
    assert len(samples) == table.height
    for s, (cands, answers) in zip(samples, table.select("candidates", "answers").iter_rows()):
        assert s.meta["candidates"] == list(cands)
        assert s.answer == " ".join(f"s_{j}" for j in sorted(list(cands).index(a) for a in answers))


def test_eval_samples_follow_instances():
    ds = make_dataset("user-split")
    ctx = context(ds)
    table = ds.instances["rec"].filter(ds.instances["rec"]["split"] == "valid")
    samples = build_eval_samples(ds, "rec", "valid", history_len=3, ctx=ctx)
    assert len(samples) == table.height
    for s, (user, pos, target) in zip(samples, table.select("user_id", "position", "target").iter_rows()):
        seq = ctx.sequences[user]
        assert s.answer == f"item_{target}" and s.meta["target"] == target
        assert s.meta["history"] == seq[:pos].tolist()
        shown = seq[max(0, pos - 3):pos]
        assert s.text.count("<answer> item_") == len(shown)
        for item in shown:
            assert f"<answer> item_{item}<|endofchunk|>" in s.text
        assert f"item_{target} " not in s.text


def test_exp_eval_answer_keeps_full_explanation():
    ds = make_dataset("leave-one-out")
    table = ds.instances["exp"].filter(ds.instances["exp"]["split"] == "test")
    samples = build_eval_samples(ds, "exp", "test")
    assert len(samples) == table.height
    for s, (rating, expl) in zip(samples, table.select("rating", "explanation").iter_rows()):
        expected = expl if rating is None else f"rate_{int(np.floor(min(5, max(1, rating)) + 0.5))} {expl}"
        assert s.answer == expected
        assert s.text.endswith("What is the rating and explanation for the item? <answer>")


@pytest.mark.parametrize("task", ALL)
def test_leave_one_out_training_never_sees_held_out_items(task):
    ds = make_dataset("leave-one-out")
    ctx = context(ds)
    for epoch in range(3):
        for s in build_training_samples(ctx, [task], history_len=3, seed=0, epoch=epoch):
            seq = ctx.sequences[s.meta["user_id"]]
            usable = len(seq) - 2
            last = s.meta["position"] + len(s.meta.get("answers", [None])) - 1
            assert last < usable
            held_out = set(seq[usable:].tolist()) - set(seq[:usable].tolist())
            shown = {int(w[len("item_"):]) for w in words(s.text) if w.startswith("item_")}
            assert not shown & held_out


def test_user_split_training_uses_training_users_only():
    ds = make_dataset("user-split")
    train = set(ds.users.filter(ds.users["split"] == "train")["user_id"].to_list())
    samples = build_training_samples(ds, ALL, seed=0)
    assert {s.meta["user_id"] for s in samples} <= train
    assert len([s for s in samples if s.task == "rec"]) == len(train)  # one window per user and epoch


def test_training_stream_is_deterministic_per_seed_and_epoch():
    ctx = context(make_dataset("leave-one-out"))
    a = build_training_samples(ctx, ALL, seed=5, epoch=2)
    b = build_training_samples(ctx, ALL, seed=5, epoch=2)
    c = build_training_samples(ctx, ALL, seed=5, epoch=3)
    assert [(s.task, s.text, s.image_items) for s in a] == [(s.task, s.text, s.image_items) for s in b]
    assert [s.text for s in a] != [s.text for s in c]
    # tasks are mixed into one stream, not in blocks
    tasks = [s.task for s in a]
    assert tasks != sorted(tasks, key=ALL.index)


def test_a_task_draws_the_same_samples_whatever_else_is_trained():
    ctx = context(make_dataset("leave-one-out"))
    alone = build_training_samples(ctx, ["exp"], seed=1, epoch=0, shuffle=False)
    mixed = [s for s in build_training_samples(ctx, ["rec", "exp"], seed=1, epoch=0) if s.task == "exp"]
    assert sorted(s.text for s in alone) == sorted(s.text for s in mixed)


def test_fractions_subsample_a_task():
    ctx = context(make_dataset("leave-one-out", n_users=80))
    full = build_training_samples(ctx, ["rec"], seed=0, shuffle=False)
    part = build_training_samples(ctx, ["rec"], seed=0, fractions={"rec": 0.25}, shuffle=False)
    assert len(part) == round(0.25 * len(full))
    assert {s.text for s in part} <= {s.text for s in full}


def test_samples_without_any_image():
    ds = make_dataset("leave-one-out", with_images=False)
    samples = build_training_samples(ds, ALL, seed=0) + build_eval_samples(ds, "img_sel", "test")
    assert samples
    assert all(s.image_items == [] and "<image>" not in s.text for s in samples)


def test_errors_are_one_line():
    ds = make_dataset()
    with pytest.raises(UnimpError, match="unknown task 'img_foo'"):
        build_training_samples(ds, ["img_foo"])
    with pytest.raises(UnimpError, match="history_len"):
        build_training_samples(ds, ["rec"], history_len=0)
    with pytest.raises(UnimpError, match="split"):
        build_eval_samples(ds, "rec", "train")
    del ds.instances["exp"]
    with pytest.raises(UnimpError, match="exp.parquet"):
        build_eval_samples(ds, "exp", "test")


def test_curriculum_stages():
    tasks = ["rec", "search", "img_sel", "exp"]
    assert [len(curriculum_tasks(tasks, e, 4)) for e in range(4)] == [1, 2, 3, 4]
    assert [len(curriculum_tasks(tasks, e, 8)) for e in range(8)] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert [len(curriculum_tasks(tasks, e, 2)) for e in range(2)] == [2, 4]
    assert [len(curriculum_tasks(tasks, e, 6)) for e in range(6)] == [1, 2, 2, 3, 4, 4]
    assert curriculum_tasks(tasks, 0, 4) == ["rec"]
    assert curriculum_tasks(["rec"], 3, 10) == ["rec"]
    assert curriculum_mix(tasks, 2, 4) == {"rec": 0.25, "search": 0.25, "img_sel": 1.0}
    assert curriculum_mix(tasks, 0, 4) == {"rec": 1.0}
