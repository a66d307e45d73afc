"""The training stream: grouping prompts of similar length into batches."""

from unimp_core.tasks.base import Sample
from unimp_core.training.samples import group_by_length


def _samples(lengths):
    return [Sample("rec", "x" * n, [], meta={"k": k}) for k, n in enumerate(lengths)]


def test_group_by_length_batches_similar_lengths_in_a_seeded_order():
    lengths = [(k * 37) % 101 + 1 for k in range(250)]
    samples = _samples(lengths)
    out = group_by_length(samples, batch_size=8, seed=1, epoch=0, window=4)
    assert sorted(s.meta["k"] for s in out) == list(range(250))  # a permutation
    # within each window of 4 batches the batches are contiguous runs of the sorted lengths
    batches = [out[i:i + 8] for i in range(0, 248, 8)]
    spread = [max(len(s.text) for s in b) - min(len(s.text) for s in b) for b in batches]
    assert sum(spread) / len(spread) < 30  # random batches of these lengths spread ~90
    assert len(out[-2:]) == 2 and len(out) % 8 == 2  # the partial batch stays last
    assert [s.meta["k"] for s in group_by_length(samples, 8, 1, 0, 4)] == [s.meta["k"] for s in out]
    assert [s.meta["k"] for s in group_by_length(samples, 8, 1, 1, 4)] != [s.meta["k"] for s in out]


def test_training_samples_group_when_asked():
    from tests.tasks.synthetic import make_dataset
    from unimp_core.training.samples import TrainingSamples

    ds = make_dataset("leave-one-out", n_users=60, max_len=20)
    plain = TrainingSamples(ds, ["rec"], 50, seed=3)
    grouped = TrainingSamples(ds, ["rec"], 50, seed=3, group_batch=4)
    assert sorted(s.text for s in grouped) == sorted(s.text for s in plain)
    assert [s.text for s in grouped] != [s.text for s in plain]
    grouped.set_epoch(1)
    assert sorted(s.text for s in grouped) == sorted(s.text for s in TrainingSamples(ds, ["rec"], 50, 3, epoch=1))


def test_rec_trains_a_short_users_whole_prefix():
    """With a history longer than the user, the rec sample ends at the last usable item, so every
    next-item position of the prefix is a target (context reconstruction) in one forward pass."""
    from tests.tasks.synthetic import make_dataset
    from unimp_core.tasks import build_training_samples, context

    ds = make_dataset("leave-one-out", n_users=30, max_len=15)
    ctx = context(ds)
    for epoch in range(3):
        for s in build_training_samples(ctx, ["rec"], 50, seed=0, epoch=epoch):
            user = s.meta["user_id"]
            assert s.meta["position"] == ctx.train_lengths[user] - 1
            assert s.text.count("<answer>") == ctx.train_lengths[user]  # every item of the prefix is a target
