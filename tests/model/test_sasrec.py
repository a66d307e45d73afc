import math

import numpy as np
import pytest
import torch

from unimp_core.model.sasrec import net as S


def _model(n_items=30, **kw) -> S.SASRec:
    torch.manual_seed(0)
    return S.SASRec(n_items, hidden=16, max_len=8, **kw).eval()


def test_shapes():
    model = _model()
    seqs = S.history_batch([[1, 2, 3], [4], list(range(20))], 8)  # (3, 8)
    assert seqs.shape == (3, 8)
    assert model(seqs).shape == (3, 8, 16)
    assert model.last_scores(seqs).shape == (3, 30)
    with pytest.raises(ValueError, match="at most 8"):
        model(torch.ones(1, 9, dtype=torch.long))


def test_history_batch_keeps_the_last_items_left_padded():
    got = S.history_batch([[5, 6, 7], [], [0, 1, 2, 3, 4]], 4)
    assert got.tolist() == [[0, 6, 7, 8], [0, 0, 0, 0], [2, 3, 4, 5]]  # input id = item id + 1


def test_training_windows_use_every_position():
    inputs, targets = S.training_windows([[0, 1, 2], [9], [3, 4, 5, 6, 7, 8]], 3)
    # the one-item sequence has no target and is skipped; the long one keeps its last 4 items
    assert inputs.tolist() == [[0, 1, 2], [6, 7, 8]]  # input id = item id + 1, 0 = padding
    assert targets.tolist() == [[0, 2, 3], [7, 8, 9]]


def test_output_at_t_does_not_depend_on_later_items():
    model = _model()
    a = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    b = torch.tensor([[0, 0, 3, 4, 5, 29, 1, 2]])  # same first three items, different later ones
    assert torch.allclose(model(a)[:, :5], model(b)[:, :5], atol=1e-6)
    assert not torch.allclose(model(a)[:, 5:], model(b)[:, 5:], atol=1e-3)
    # nor on how many items follow, nor on padding: the prefix alone gives the same states
    alone = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]])
    assert torch.allclose(model(a)[:, 2:5], model(alone)[:, 5:], atol=1e-6)
    assert torch.allclose(model(alone[:, 5:]), model(alone)[:, 5:], atol=1e-6)


def test_trim_keeps_the_states():
    model = _model()
    seqs = S.history_batch([[1, 2], [3, 4, 5]], 8)
    trimmed, = S.trim(seqs)
    assert trimmed.shape == (2, 3)
    assert torch.allclose(model(seqs)[:, -3:], model(trimmed), atol=1e-6)


def test_packed_users_score_as_alone():
    model = _model()
    inputs, targets = map(torch.from_numpy, S.training_windows([[1, 2, 3], [4, 5, 6, 7, 8, 9], [10, 11],
                                                                 [12, 13, 14, 15]], 8))
    alone = model(inputs)[inputs != S.PAD]  # (P, d) in user order
    p_inputs, p_targets, segments, last = S.pack(inputs, targets)
    assert p_inputs.shape[0] == 2 and (p_inputs != S.PAD).sum() == (inputs != S.PAD).sum()
    packed = model(p_inputs, segments)
    # every (input, target) pair is kept, and each position's state is the one it has alone
    pairs = sorted(zip(inputs[inputs != S.PAD].tolist(), targets[inputs != S.PAD].tolist()))
    assert sorted(zip(p_inputs[p_inputs != S.PAD].tolist(), p_targets[p_inputs != S.PAD].tolist())) == pairs
    by_item = {int(i): h for i, h in zip(inputs[inputs != S.PAD], alone)}  # items are distinct here
    for i, h in zip(p_inputs[p_inputs != S.PAD], packed[p_inputs != S.PAD]):
        assert torch.allclose(by_item[int(i)], h, atol=1e-5)
    assert p_inputs.reshape(-1)[last].tolist() == [3, 9, 11, 15]  # each user's last input id
    # scoring packs too, and gives each user's last state
    assert torch.allclose(model.last_scores(inputs), model.item_scores(model(inputs)[:, -1]), atol=1e-5)
    with pytest.raises(ValueError, match="without history"):
        model.last_scores(torch.zeros(1, 8, dtype=torch.long))


def test_negatives_avoid_the_window():
    gen = torch.Generator().manual_seed(0)
    inputs = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    targets = torch.tensor([[0, 2, 3, 8], [5, 6, 7, 9]])
    for _ in range(20):
        neg = S.sample_negatives(inputs, targets, 12, gen)
        assert neg.shape == targets.shape
        assert ((neg >= 1) & (neg <= 12)).all()
        for row in range(2):
            assert not set(neg[row].tolist()) & set(inputs[row].tolist() + targets[row].tolist())
    # a row that has seen the whole catalogue cannot avoid it: no endless loop
    full = torch.tensor([[1, 2, 3]])
    assert S.sample_negatives(full, full, 3, gen).shape == (1, 3)


def _hand_model() -> tuple[S.SASRec, torch.Tensor]:
    model = S.SASRec(3, hidden=2, blocks=1, max_len=2)
    with torch.no_grad():
        model.item_emb.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]]))
    states = torch.tensor([[[9.0, 9.0], [0.5, 1.0]]])  # (1, 2, 2): the first position has no target
    return model, states


def test_bce_loss_by_hand():
    model, states = _hand_model()
    targets = torch.tensor([[0, 2]])  # item 1 (input id 2): score 0.5*0 + 1*2 = 2
    negatives = torch.tensor([[3, 3]])  # item 2 (input id 3): score -0.5 + 1 = 0.5
    want = -math.log(1 / (1 + math.exp(-2.0))) - math.log(1 - 1 / (1 + math.exp(-0.5)))
    assert S.bce_loss(model, states, targets, negatives).item() == pytest.approx(want, rel=1e-6)


def test_ce_loss_by_hand():
    model, states = _hand_model()
    scores = [0.5, 2.0, 0.5]  # items 0, 1, 2 against the state (0.5, 1)
    want = -(2.0 - math.log(sum(math.exp(s) for s in scores)))
    assert S.ce_loss(model, states, torch.tensor([[0, 2]])).item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("kind", S.LOSSES)
def test_learns_a_successor_rule(kind):
    # item i is always followed by item i+1 (mod 20): a few hundred steps must find it
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    seqs = [(rng.integers(20) + np.arange(rng.integers(3, 9))) % 20 for _ in range(256)]
    inputs, targets = map(torch.from_numpy, S.training_windows(seqs, 8))
    model = S.SASRec(20, hidden=16, max_len=8, dropout=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for step in range(150):
        rows = torch.from_numpy(rng.choice(len(inputs), 64))
        loss = S.loss(model, inputs[rows], targets[rows], kind, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    histories = [list(range(s, s + 4)) for s in range(16)]
    with torch.no_grad():
        scores = model.last_scores(S.history_batch(histories, 8))  # (16, 20)
    # as evaluated (--exclude-history): BCE never sees a history item as a negative, so it may score them high
    scores[torch.arange(16)[:, None], torch.tensor(histories)] = float("-inf")
    top = scores.argmax(dim=1)
    assert (top == torch.arange(4, 20)).float().mean() >= 0.9
    with pytest.raises(ValueError, match="unknown SASRec loss"):
        S.loss(model, inputs[:2], targets[:2], "bpr")
