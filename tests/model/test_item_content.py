"""Item attributes in the item's own rows: shared embeddings added where items are read and scored."""

from __future__ import annotations

import pytest
import torch

from unimp_core.errors import UnimpError
from unimp_core.model.openflamingo.factory import build_model, load_bundle, save_bundle
from unimp_core.model.item_content import ItemContent, attach
from unimp_core.model.openflamingo.spec import ModelSpec

from .conftest import N_ITEMS

# items 0..29: brand (i % 4), category (i % 3); item 29 has none
ATTRIBUTES = ([f"b{k}" for k in range(4)] + [f"c{k}" for k in range(3)],
              [[i % 4, 4 + i % 3] for i in range(N_ITEMS - 1)] + [[]])


def test_content_is_the_mean_of_the_attribute_rows():
    content = ItemContent(3, 2, [[0, 2], [1], []])
    with torch.no_grad():
        content.attributes.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 4.0], [3.0, 2.0]]))
    assert torch.equal(content(), torch.tensor([[2.0, 1.0], [0.0, 4.0], [0.0, 0.0]]))


@pytest.fixture(scope="module")
def content_bundle(dataset):
    return build_model(ModelSpec(), items_text=dataset, n_items=N_ITEMS, item_attributes=ATTRIBUTES)


def test_item_rows_are_read_and_scored_with_their_attributes(content_bundle):
    model, ids = content_bundle.model, content_bundle.ids
    lm = model.lang_encoder
    plain_in = lm.get_input_embeddings().weight[ids.items]  # (N, d)
    content = lm.item_content()  # (N, d)
    with torch.no_grad():
        got_in = lm.get_input_embeddings()(ids.items)
        assert torch.allclose(got_in, plain_in + content)
        hidden = torch.randn(5, plain_in.shape[1])
        logits = lm.get_output_embeddings()(hidden)  # (5, V)
        assert torch.allclose(logits[:, ids.items], hidden @ (lm.get_output_embeddings().weight[ids.items] + content).T,
                              atol=1e-5)
        other = torch.tensor([ids.answer, ids.eoc])
        assert torch.equal(lm.get_input_embeddings()(other), lm.get_input_embeddings().weight[other])
    # the item without attributes keeps its own row alone; two items sharing both attributes share the content
    assert torch.equal(content[N_ITEMS - 1], torch.zeros_like(content[0]))
    assert torch.equal(content[0], content[12])


def test_the_split_head_scores_items_with_their_attributes(content_bundle):
    """Training's head over the item rows alone (`SplitLogits`) reads the same content as the full head."""
    from unimp_core.model.openflamingo.mixins import split_head

    head = content_bundle.model.lang_encoder.get_output_embeddings()
    lo, hi = content_bundle.ids.item_range
    hidden = torch.randn(6, head.weight.shape[1])
    rows = torch.tensor([True, False, True, True, False, True])
    with torch.no_grad():
        items, others = split_head(head, hidden, rows, (lo, hi))
        full = head(hidden)  # (6, V)
    torch.testing.assert_close(items, full[rows, lo:hi])
    torch.testing.assert_close(others, full[~rows])


def test_attribute_embeddings_train(content_bundle):
    names = [n for n, p in content_bundle.model.named_parameters() if p.requires_grad]
    assert any("item_content.attributes" in n for n in names)


def test_a_run_folder_rebuilds_the_same_content(content_bundle, tmp_path):
    save_bundle(content_bundle, tmp_path)
    again = load_bundle(tmp_path)
    assert again.item_attributes == ATTRIBUTES
    again.model.load_state_dict(content_bundle.model.state_dict())
    lm, lm2 = content_bundle.model.lang_encoder, again.model.lang_encoder
    assert torch.equal(lm.item_content(), lm2.item_content())


def test_attributes_need_contiguous_atomic_item_tokens(tiny_bundle):
    content = ItemContent(1, tiny_bundle.model.lang_encoder.get_input_embeddings().embedding_dim, [[0]] * 3)
    with pytest.raises(UnimpError, match="items described"):
        attach(tiny_bundle.model.lang_encoder, content, tiny_bundle.ids.items)


def _item_logits(bundle, items: list[int]) -> torch.Tensor:
    """The LM's logits over the vocabulary after reading the item tokens of `items` alone."""
    lm = bundle.model.lang_encoder
    ids = bundle.ids.items[torch.tensor(items)][None]  # (1, T)
    with torch.no_grad():
        return lm(input_ids=ids).logits[0]  # (T, V)


@pytest.mark.parametrize("fusion", ["rows", "attention"])
def test_attention_fusion_reaches_queries_and_keys_only(dataset, fusion):
    """With fusion attention the attributes change where a later position attends, never an item's own
    rows: a one-token input (attending to itself alone, weight 1) reads its value, which is pure id."""
    spec = ModelSpec(attribute_fusion=fusion, cross_attn_every_n_layers=0)
    plain = build_model(spec, items_text=dataset, n_items=N_ITEMS)
    fused = build_model(spec, items_text=dataset, n_items=N_ITEMS, item_attributes=ATTRIBUTES)
    state = {k: v for k, v in fused.model.state_dict().items() if "item_content" not in k}
    plain.model.load_state_dict(state)
    with torch.no_grad():
        fused.model.lang_encoder.item_content.attributes.weight.normal_(std=1.0)
    plain.model.eval(), fused.model.eval()
    one, one_fused = _item_logits(plain, [5]), _item_logits(fused, [5])
    many, many_fused = _item_logits(plain, [5, 2, 7]), _item_logits(fused, [5, 2, 7])
    if fusion == "attention":
        torch.testing.assert_close(one_fused, one)
        assert not torch.allclose(many_fused[-1], many[-1])
        lm = fused.model.lang_encoder
        assert torch.equal(lm.get_input_embeddings()(fused.ids.items), lm.get_input_embeddings().weight[fused.ids.items])
    else:
        assert not torch.allclose(one_fused, one)


def test_attribute_dropout_drops_whole_vectors_in_training_only():
    content = ItemContent(2, 4, [[0], [1], [0, 1]] * 100, dropout=0.5)
    with torch.no_grad():
        content.attributes.weight.fill_(1.0)
    content.train()
    dropped = content()
    zero_rows = (dropped == 0).all(dim=1)
    assert 0.3 < float(zero_rows.float().mean()) < 0.7
    assert torch.equal(dropped[~zero_rows], torch.full_like(dropped[~zero_rows], 2.0))  # kept rows scaled by 1/(1-p)
    content.eval()
    assert torch.equal(content(), torch.ones(300, 4))


def test_a_content_loss_scores_item_answers_by_content_alone_in_training(dataset):
    """With `attribute_loss` the training forward also scores the item rows against the content vectors
    alone, which the loss adds at that weight; evaluation sees the ordinary scores only."""
    from unimp_core.model.openflamingo import family as openflamingo
    from unimp_core.training.loss import SplitLogits, answer_loss_parts

    bundle = build_model(ModelSpec(attribute_loss=0.5, cross_attn_every_n_layers=0), items_text=dataset,
                         n_items=N_ITEMS, item_attributes=ATTRIBUTES)
    model, ids = bundle.model, bundle.ids
    lm = model.lang_encoder
    input_ids = torch.cat([torch.tensor([ids.answer]), ids.items[torch.tensor([5, 2, 7])]])[None]  # (1, 4)
    labels = input_ids.clone()
    labels[0, :2] = -100  # items 2 and 7 are answers
    batch = {"vision_x": torch.zeros(1, 1, 1, 3, bundle.image_size, bundle.image_size), "input_ids": input_ids,
             "attention_mask": torch.ones_like(input_ids), "labels": labels}
    model.eval()
    assert openflamingo.forward(model, batch, ids.item_range).by_content is None
    model.train()
    lm.item_content.dropout = 0.0
    torch.manual_seed(0)
    split = openflamingo.forward(model, batch, ids.item_range)
    assert isinstance(split, SplitLogits) and split.content_weight == 0.5
    assert split.by_content.shape == (2, N_ITEMS)
    # every item sharing both attributes with another scores alike: content alone cannot tell them apart
    torch.testing.assert_close(split.by_content[:, 0], split.by_content[:, 12])
    assert not torch.allclose(split.items[:, 0], split.items[:, 12])
    loss = answer_loss_parts(split, labels, item_range=ids.item_range).loss
    model.zero_grad()
    loss.backward()
    assert lm.item_content.attributes.weight.grad.abs().sum() > 0
