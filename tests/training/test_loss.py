import math

import pytest
import torch
import torch.nn.functional as F

from unimp_core.training.loss import answer_loss_parts, label_positions, per_task


def answer_loss(logits, labels, weights=None, gamma=0.0):
    return answer_loss_parts(logits, labels, weights, gamma).loss

L3, L5 = math.log(3), math.log(5)


def _batch():
    """Two samples, V = 3. Position t predicts label t+1.

    sample 0: logits[0,0] = (0, 0, 0)      -> label 2, p = 1/3
              logits[0,1] = (ln 3, 0, 0)   -> label 0, p = 3/5
    sample 1: logits[1,1] = (0, ln 4, 0)   -> label 1, p = 4/6
    """
    logits = torch.zeros(2, 3, 3)
    logits[0, 1, 0] = L3
    logits[1, 1, 1] = math.log(4)
    labels = torch.tensor([[-100, 2, 0], [-100, -100, 1]])
    return logits, labels


def test_plain_cross_entropy_by_hand():
    logits, labels = _batch()
    expected = (L3 + (L5 - L3) + math.log(1.5)) / 3  # -ln(1/3), -ln(3/5), -ln(2/3)
    assert answer_loss(logits, labels, gamma=0) == pytest.approx(expected, rel=1e-6)


def test_task_weights_by_hand():
    logits, labels = _batch()
    weights = torch.tensor([1.0, 2.0])
    expected = (L3 + (L5 - L3) + 2 * math.log(1.5)) / 3  # normalised by the token count, not the weights
    assert answer_loss(logits, labels, weights, gamma=0) == pytest.approx(expected, rel=1e-6)


def test_focal_term_by_hand():
    logits, labels = _batch()
    weights = torch.tensor([2.0, 1.0])
    # (1 - p)^2 * -ln p: (2/3)^2 ln 3, (2/5)^2 ln(5/3), (1/3)^2 ln 1.5
    expected = (2 * (4 / 9) * L3 + 2 * 0.16 * (L5 - L3) + (1 / 9) * math.log(1.5)) / 3
    assert answer_loss(logits, labels, weights, gamma=2) == pytest.approx(expected, rel=1e-6)


def test_gamma_zero_matches_torch_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11)
    labels = torch.randint(0, 11, (3, 7))
    labels[torch.rand(3, 7) < 0.4] = -100
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert answer_loss(logits, labels) == pytest.approx(ref.item(), rel=1e-5)


def test_focal_gradient_flows_and_lowers_easy_tokens():
    logits, labels = _batch()
    logits.requires_grad_(True)
    answer_loss(logits, labels, gamma=2).backward()
    assert logits.grad is not None and logits.grad[:, 0].abs().sum() > 0
    # the focal term shrinks the loss of confident tokens more than of hard ones
    easy, hard = torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)
    easy[0, 0, 0], hard[0, 0, 0] = 3.0, -3.0
    lab = torch.tensor([[-100, 0]])
    ratio_easy = answer_loss(easy, lab, gamma=2) / answer_loss(easy, lab, gamma=0)
    ratio_hard = answer_loss(hard, lab, gamma=2) / answer_loss(hard, lab, gamma=0)
    assert ratio_easy < ratio_hard


def test_no_answer_tokens_gives_zero_with_a_graph():
    logits = torch.randn(2, 4, 5, requires_grad=True)
    labels = torch.full((2, 4), -100)
    loss = answer_loss(logits, labels, gamma=2)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_parts_per_sample_and_per_task():
    logits, labels = _batch()
    weights = torch.tensor([1.0, 2.0])
    parts = answer_loss_parts(logits, labels, weights, gamma=0)
    assert parts.sample_tokens.tolist() == [2, 1]
    assert parts.sample_sums.tolist() == pytest.approx([L5, 2 * math.log(1.5)], rel=1e-6)
    sums, counts = per_task(parts.sample_sums, parts.sample_tokens, torch.tensor([2, 0]), n_tasks=4)
    assert counts.tolist() == [1, 0, 2, 0]
    assert sums.tolist() == pytest.approx([2 * math.log(1.5), 0, L5, 0], rel=1e-6)
    # a global normaliser (e.g. tokens over all accumulation micro-batches)
    halved = answer_loss_parts(logits, labels, weights, gamma=0, normalizer=6)
    assert halved.loss.item() == pytest.approx(parts.loss.item() / 2, rel=1e-6)


def test_bf16_logits_are_computed_in_float32():
    logits, labels = _batch()
    loss = answer_loss(logits.to(torch.bfloat16), labels)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(answer_loss(logits, labels).item(), rel=1e-2)


def test_logits_of_the_label_positions_only_give_the_same_loss():
    logits, labels = _batch()
    at = label_positions(labels)
    assert at.tolist() == [[True, True, False], [False, True, False]]
    for gamma in (0.0, 2.0):
        full = answer_loss_parts(logits, labels, torch.tensor([1.0, 2.0]), gamma)
        picked = answer_loss_parts(logits[at], labels, torch.tensor([1.0, 2.0]), gamma)
        assert picked.loss == pytest.approx(float(full.loss), rel=1e-6)
        assert torch.equal(picked.sample_sums, full.sample_sums) and torch.equal(picked.sample_tokens, full.sample_tokens)


def test_an_item_label_is_scored_against_the_items_alone_by_hand():
    # V = 3, item tokens [1, 3): sample 0's label 2 is an item, p = e^0 / (e^0 + e^0) = 1/2 over items 1, 2
    # (1/3 over the whole vocabulary); its label 0 is not an item and keeps the whole-vocabulary softmax (3/5)
    logits, labels = _batch()
    loss = answer_loss_parts(logits, labels, item_range=(1, 3)).loss
    # sample 1's label 1: p = 4 / (4 + 1) over the items
    assert loss.item() == pytest.approx((math.log(2) + math.log(5 / 3) + math.log(5 / 4)) / 3)


def test_a_content_loss_adds_a_second_item_softmax_by_hand():
    """`model.attribute_loss`: each item label also pays the weighted cross-entropy of the items scored by
    content alone (here even over the two items, ln 2 each); the other labels pay nothing more."""
    from unimp_core.training.loss import SplitLogits, item_rows

    logits, labels = _batch()
    picked = logits[label_positions(labels)]  # (3, 3): labels 2, 0, 1
    rows = item_rows(torch.tensor([2, 0, 1]), (1, 3))
    plain = SplitLogits(picked[rows, 1:3], picked[~rows])
    with_content = plain._replace(by_content=torch.zeros(2, 2), content_weight=0.5)
    base = answer_loss_parts(plain, labels, item_range=(1, 3))
    got = answer_loss_parts(with_content, labels, item_range=(1, 3))
    assert got.loss.item() == pytest.approx(base.loss.item() + 0.5 * 2 * math.log(2) / 3)
    assert got.sample_sums.tolist() == pytest.approx([base.sample_sums[0].item() + 0.5 * math.log(2),
                                                      base.sample_sums[1].item() + 0.5 * math.log(2)])
