"""Exact full-catalogue ranking vs beam search, on the tiny model with images (sample shop)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.evaluation.trained import sample_dataset
from tests.model.conftest import open_gates
from unimp_core.evaluation import metrics as M
from unimp_core.model.openflamingo import decode as R
from unimp_core.evaluation import topk
from unimp_core.tasks import build_eval_samples, context


# ------------------------------------------------------------------------------------ pure helpers


def test_position_ids_count_from_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert R.position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_top_items_orders_ties_by_item_id_and_skips_excluded():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0]])
    values, items = topk.top_items(scores, 4)
    assert items.tolist() == [[1, 2, 4, 3]] and values.tolist() == [[3.0, 3.0, 3.0, 2.0]]
    mask = topk.exclusion_mask([[1, 3]], None, 5)
    assert topk.top_items(scores, 3, mask)[1].tolist() == [[2, 4, 0]]
    assert topk.top_items(scores, 99)[1].shape == (1, 5)  # k larger than the catalogue


def test_exclusion_mask_never_removes_the_target():
    mask = topk.exclusion_mask([[0, 2, 3], []], [2, 1], 4)
    assert mask.tolist() == [[True, False, False, True], [False, False, False, False]]


def test_trie_lookup_depth_and_constraint():
    trie = R.TokenTrie.build([[5], [6, 7], [6, 8], [6]])  # item 3 is a prefix of items 1 and 2
    assert trie.depth == 2
    assert [trie.lookup(s) for s in ([5], [6, 7], [6, 8], [6], [7], [6, 7, 1])] == [0, 1, 2, 3, None, None]
    end = 99
    allowed = R.prefix_constraint(trie, prompt_len=2, end_id=end)
    prompt = [11, 12]
    assert sorted(allowed(0, torch.tensor(prompt))) == [5, 6]
    assert allowed(0, torch.tensor(prompt + [5])) == [end]  # a complete item must end
    assert sorted(allowed(0, torch.tensor(prompt + [6]))) == [7, 8, end]  # item 3 may end or continue
    assert allowed(0, torch.tensor(prompt + [7])) == [end]  # off the trie (cannot happen): close
    banned = R.prefix_constraint(trie, 2, end, banned=[{0}, set()])
    assert banned(0, torch.tensor(prompt)) == [6] and sorted(banned(1, torch.tensor(prompt))) == [5, 6]


def test_parse_item_and_cut_at():
    assert R.parse_item("item_12", 40) == 12
    assert R.parse_item(" item_3 <|endofchunk|> junk", 40) == 3
    assert R.parse_item("item_40", 40) is None  # outside the catalogue
    assert R.parse_item("item_1 item_2", 40) is None
    assert R.parse_item("rate_3 nice", 40) is None
    assert R.cut_at([4, 5, 9, 6], {9}) == [4, 5] and R.cut_at([4], {9}) == [4]


def test_decoded_answers_keep_unimp_tokens_apart():
    """UniMP's tokens swallow the space before them when encoded; decoding must give it back, or an
    img_sel answer [s_2, s_0] reads "s_2s_0" and parses as no slot at all."""
    from tests.tasks.synthetic import make_dataset
    from unimp_core.model.tokenizer import dataset_texts, train_bpe_tokenizer
    from unimp_core.model.vocab import add_flamingo_tokens, add_unimp_tokens

    ds = make_dataset("leave-one-out")
    tok = train_bpe_tokenizer(dataset_texts(ds), vocab_size=400)
    add_flamingo_tokens(tok)
    add_unimp_tokens(tok, n_items=ds.items.height)
    enc = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    assert R.decode_answer(tok, enc("s_2 s_0")) == "s_2 s_0"
    assert M.parse_slots(R.decode_answer(tok, enc("s_2 s_0")))[0] == {0, 2}
    assert R.decode_answer(tok, enc("rate_4 fits well")) == "rate_4 fits well"
    assert R.decode_answer(tok, enc("item_3 item_5")) == "item_3 item_5"
    assert R.parse_item(R.decode_answer(tok, enc("item_3 item_5")), ds.items.height) is None
    assert R.decode_answer(tok, enc("<answer> s_1 <|endofchunk|>")) == "s_1"
    assert R.decode_answer(tok, enc("<answer> s_1 <|endofchunk|>"), skip_special_tokens=False) == \
        "<answer> s_1 <|endofchunk|>"


# --------------------------------------------------------------------------------- the tiny model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny model on the sample shop, its gates open and item output rows spread apart (a fresh
    model gives every new token the same row, so all items would tie)."""
    from unimp_core.data.store import load_dataset
    from unimp_core.model.openflamingo.factory import build_model
    from unimp_core.model.vision_cache import ItemImages
    from unimp_core.model.openflamingo.spec import ModelSpec
    from unimp_core.training.collate import make_collator

    ds = load_dataset(sample_dataset(tmp_path_factory.mktemp("ranking")))
    bundle = build_model(ModelSpec(), items_text=ds, n_items=ds.items.height)
    model = bundle.model
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        open_gates(model)
        head = model.lang_encoder.get_output_embeddings().weight
        head[bundle.ids.items] += torch.randn(bundle.ids.n_items, head.shape[1], generator=gen)
        emb = model.lang_encoder.get_input_embeddings().weight
        emb[bundle.ids.items] += 0.5 * torch.randn(bundle.ids.n_items, emb.shape[1], generator=gen)
    model.eval()
    ctx = context(ds)
    # rec and search prompts differ in length, so a mixed batch really is left-padded
    samples = build_eval_samples(ds, "rec", "test", 5, ctx)[:5] + build_eval_samples(ds, "search", "test", 2, ctx)[:5]
    collate = make_collator(bundle.tokenizer, padding_side="left", images=ItemImages(ds, bundle.image_transform),
                            image_shape=(3, bundle.image_size, bundle.image_size))
    return bundle, samples, collate


def test_left_padded_batch_scores_as_each_prompt_alone(setup):
    bundle, samples, collate = setup
    batch = collate(samples)
    assert (batch["attention_mask"] == 0).any(), "the batch should need padding"
    together = R.answer_logits(bundle.model, batch)
    alone = torch.cat([R.answer_logits(bundle.model, collate([s])) for s in samples])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)
    # ... and as open_flamingo's own forward pass computes it
    one = collate([samples[0]])
    reference = bundle.model(vision_x=one["vision_x"], lang_x=one["input_ids"], attention_mask=one["attention_mask"])
    torch.testing.assert_close(alone[0], reference.logits[0, -1], atol=1e-5, rtol=1e-5)


def test_each_distinct_image_encoded_once_is_exact(setup):
    bundle, samples, collate = setup
    batch = collate(samples)
    ids = batch["image_ids"]
    assert ids.unique().numel() < ids.numel(), "the batch should repeat some pictures"
    model = bundle.model
    layers = model.lang_encoder._get_decoder_layers()
    with torch.no_grad():
        model._encode_vision_x(vision_x=batch["vision_x"])
        reference = layers[0].vis_x.clone()
        R.encode_images(model, batch["vision_x"], ids)
        torch.testing.assert_close(layers[0].vis_x, reference, atol=1e-5, rtol=1e-5)
        assert all(layer.vis_x is layers[0].vis_x for layer in layers)
    model.lang_encoder.clear_conditioned_layers()


def test_images_change_the_scores(setup):
    """The gates are open, so the answer depends on the pictures (the vision path is exercised)."""
    bundle, samples, collate = setup
    batch = collate(samples[:2])
    blank = dict(batch, vision_x=torch.zeros_like(batch["vision_x"]))
    assert not torch.allclose(R.answer_logits(bundle.model, batch), R.answer_logits(bundle.model, blank))


def test_fast_ranking_top10_equals_constrained_10_beam_search(setup):
    bundle, samples, collate = setup
    ids = bundle.ids
    batch = collate(samples)
    scores = R.item_scores(R.answer_logits(bundle.model, batch), ids.items)  # (B, N)
    top_scores, top_items = topk.top_items(scores, 11)
    # no exact ties at the top, so there is one right order to compare
    assert (top_scores[:, :-1] > top_scores[:, 1:]).all()
    trie = R.TokenTrie.build(R.item_token_sequences(bundle.tokenizer, ids.n_items))
    assert trie.depth == 1  # item ids are single tokens
    beams = R.constrained_beam(bundle.model, batch, trie, num_beams=10, eoc_id=ids.eoc, pad_id=ids.pad)
    assert beams.items == top_items[:, :10].tolist()
    # beam scores are the log-probabilities of those items among the items (constrained decoding's softmax)
    logp = torch.log_softmax(R.item_scores(R.answer_logits(bundle.model, batch), ids.items), dim=-1)
    expected = logp.gather(1, top_items[:, :10])
    torch.testing.assert_close(torch.tensor(beams.scores), expected, atol=1e-4, rtol=1e-4)
    # the paper's code's way: batch 1, unconstrained 10 beams, one new token
    one = collate([samples[0]])
    seqs, _ = R.generate(bundle.model, one, max_new_tokens=1, eos_id=ids.eoc, pad_id=ids.pad, num_beams=10,
                         num_return=10)
    token_to_item = {int(t): i for i, t in enumerate(ids.items.tolist())}
    seed_items = [token_to_item[t] for t in seqs[:, 0].tolist() if t in token_to_item]
    # its items are the best items by logit (other tokens may take some of the 10 places)
    assert seed_items == top_items[0, : len(seed_items)].tolist()


def test_constrained_beam_respects_banned_items(setup):
    bundle, samples, collate = setup
    ids = bundle.ids
    batch = collate(samples[:3])
    trie = R.TokenTrie.build(R.item_token_sequences(bundle.tokenizer, ids.n_items))
    free = R.constrained_beam(bundle.model, batch, trie, num_beams=5, eoc_id=ids.eoc, pad_id=ids.pad)
    banned = [set(row[:2]) for row in free.items]
    beams = R.constrained_beam(bundle.model, batch, trie, num_beams=5, eoc_id=ids.eoc, pad_id=ids.pad, banned=banned)
    for row, ban, before in zip(beams.items, banned, free.items):
        assert not ban & set(row) and row[:3] == before[2:5]


def test_free_beam_flags_outputs_that_are_not_item_ids(setup):
    bundle, samples, collate = setup
    ids = bundle.ids
    result = R.free_beam(bundle.model, collate(samples[:2]), bundle.tokenizer, ids.n_items, num_beams=4,
                         max_new_tokens=3, eoc_id=ids.eoc, pad_id=ids.pad)
    assert len(result.items) == 2 and all(len(row) == 4 for row in result.items)
    for items, texts in zip(result.items, result.texts):
        for item, text in zip(items, texts):
            assert item == R.parse_item(text, ids.n_items)
            if item is not None:
                assert text == f"item_{item}"


def test_ranks_agree_with_metrics_target_ranks(setup):
    bundle, samples, collate = setup
    batch = collate(samples)
    scores = R.item_scores(R.answer_logits(bundle.model, batch), bundle.ids.items)
    targets = [s.meta["target"] for s in samples]
    ranks = M.target_ranks(scores.numpy(), targets)
    order = topk.top_items(scores, bundle.ids.n_items)[1].numpy()
    assert ranks.tolist() == [int(np.where(row == t)[0][0]) for row, t in zip(order, targets)]


def test_item_token_sequences_are_the_item_tokens(setup):
    bundle = setup[0]
    seqs = R.item_token_sequences(bundle.tokenizer, bundle.ids.n_items)
    assert seqs == [[t] for t in bundle.ids.items.tolist()]
    copy.deepcopy(R.TokenTrie.build(seqs))  # plain data: picklable/copyable for worker processes


def test_batched_text_generation_equals_one_prompt_at_a_time(setup):
    bundle, samples, collate = setup
    ids = bundle.ids
    kwargs = dict(max_new_tokens=6, num_beams=1, eoc_id=ids.eoc, pad_id=ids.pad, eos_id=ids.eos)
    batch = collate(samples[3:7])  # rec and search prompts: left padding inside the batch
    assert (batch["attention_mask"] == 0).any()
    together = R.generate_texts(bundle.model, batch, bundle.tokenizer, **kwargs)
    alone = [R.generate_texts(bundle.model, collate([s]), bundle.tokenizer, **kwargs)[0] for s in samples[3:7]]
    assert together == alone and all(isinstance(t, str) for t in together)
    assert any(together)  # something was generated
