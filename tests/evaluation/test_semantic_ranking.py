"""Semantic item ids: exact code-path scores (one tree pass per depth) against the plain way, and
constrained beam search against the exact ranking, on the tiny model with images (sample shop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.evaluation.trained import sample_dataset
from tests.model.conftest import open_gates
from tests.item_codes import write_item_codes
from unimp_core.errors import UnimpError
from unimp_core.model.openflamingo import decode as R
from unimp_core.model.openflamingo import tree as T
from unimp_core.evaluation import topk
from unimp_core.tasks import build_eval_samples, context


def test_code_tree_feeds_only_prefixes_that_lead_to_a_choice():
    # a0 has two continuations (scored); a1 and every depth-2 prefix have one (cost nothing, never fed)
    tree = T.CodeTree.build(np.array([[10, 20, 30], [10, 21, 30], [11, 20, 30]]))
    root, first, second = tree.levels
    assert root.scored.tolist() == [0] and root.allowed.tolist() == [[True, True]]
    assert first.tokens.tolist() == [10] and first.scored.tolist() == [0] and first.vocab.tolist() == [20, 21]
    assert len(second.tokens) == 0 and len(second.scored) == 0
    assert tree.fed == 1
    # items 0 and 1 are scored at depths 0 and 1, item 2 at depth 0 only
    assert sorted(root.items.tolist()) == [0, 1, 2] and sorted(first.items.tolist()) == [0, 1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny model with semantic ids (2 levels of 4 codes + up to 3 collisions) on the sample shop, its
    gates open and code rows spread apart (fresh rows would make every path nearly equally likely)."""
    from unimp_core.data.store import load_dataset
    from unimp_core.itemcodes.codes import load_item_codes
    from unimp_core.model.openflamingo.factory import build_model
    from unimp_core.model.vision_cache import ItemImages
    from unimp_core.model.openflamingo.spec import ModelSpec
    from unimp_core.specs.model import ItemCodesRecord
    from unimp_core.training.collate import make_collator

    root = sample_dataset(tmp_path_factory.mktemp("semantic"))
    write_item_codes(root, levels=2, codes=4)
    ds, codes = load_dataset(root), load_item_codes(root)
    spec = ModelSpec(item_ids="semantic", item_codes=ItemCodesRecord(
        levels=codes.levels, codes=codes.codes, collision_codes=codes.collision_codes))
    bundle = build_model(spec, items_text=ds, n_items=ds.items.height, item_codes=codes)
    model = bundle.model
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        open_gates(model)
        rows = torch.cat(bundle.ids.code_levels)
        out, inp = model.lang_encoder.get_output_embeddings().weight, model.lang_encoder.get_input_embeddings().weight
        out[rows] += torch.randn(len(rows), out.shape[1], generator=gen)
        inp[rows] += 0.5 * torch.randn(len(rows), inp.shape[1], generator=gen)
    model.eval()
    ctx = context(ds, codes)
    samples = build_eval_samples(ds, "rec", "test", 5, ctx)[:4] + build_eval_samples(ds, "search", "test", 2, ctx)[:3]
    collate = make_collator(bundle.tokenizer, padding_side="left", images=ItemImages(ds, bundle.image_transform),
                            image_shape=(3, bundle.image_size, bundle.image_size))
    return bundle, samples, collate


def test_tree_scores_equal_scoring_every_items_full_path(setup, monkeypatch):
    bundle, samples, collate = setup
    batch = collate(samples)
    assert (batch["attention_mask"] == 0).any(), "the batch should need padding"
    ids = bundle.ids
    tree = T.code_tree(ids.item_tokens)
    assert T.code_tree(ids.item_tokens) is tree  # built once per run
    assert [len(level.tokens) for level in tree.levels] == [0, 4, 16]  # every prefix leads to a choice here
    scores = T.path_scores(bundle.model, batch, tree)  # (B, N)
    every = list(range(ids.n_items))
    for row in range(len(samples)):
        torch.testing.assert_close(scores[row], T.reference_path_scores(bundle.model, batch, tree, ids.item_tokens,
                                                                         row, every), atol=1e-4, rtol=1e-4)
    # constrained decoding's log-probabilities: a distribution over the catalogue
    torch.testing.assert_close(scores.exp().sum(dim=1), torch.ones(len(samples)), atol=1e-4, rtol=1e-4)
    # small chunks of prefixes per pass give the same scores
    monkeypatch.setattr(T, "TREE_CHUNK_SCORES", 1)
    torch.testing.assert_close(T.path_scores(bundle.model, batch, tree), scores, atol=1e-5, rtol=1e-5)


def test_constrained_beam_as_wide_as_the_catalogue_is_the_exact_ranking(setup):
    bundle, samples, collate = setup
    ids = bundle.ids
    batch = collate(samples)
    scores = T.path_scores(bundle.model, batch, T.code_tree(ids.item_tokens))
    values, order = topk.top_items(scores, ids.n_items)
    assert (values[:, :-1] > values[:, 1:]).all(), "no exact ties: one right order"
    trie = R.TokenTrie.build(ids.item_tokens.tolist())
    assert trie.depth == 3
    beams = R.constrained_beam(bundle.model, batch, trie, num_beams=ids.n_items, eoc_id=ids.eoc, pad_id=ids.pad)
    assert beams.items == order.tolist()  # every item once, in the exact order
    torch.testing.assert_close(torch.tensor(beams.scores), values, atol=1e-4, rtol=1e-4)
    # excluded items are left out without changing the others' scores
    banned = [set(row[:3]) for row in order.tolist()]
    kept = R.constrained_beam(bundle.model, batch, trie, num_beams=ids.n_items, eoc_id=ids.eoc, pad_id=ids.pad,
                              banned=banned)
    assert kept.items == [row[3:] for row in order.tolist()]
    torch.testing.assert_close(torch.tensor(kept.scores), values[:, 3:], atol=1e-4, rtol=1e-4)
    # a narrow beam lists distinct real items only
    narrow = R.constrained_beam(bundle.model, batch, trie, num_beams=5, eoc_id=ids.eoc, pad_id=ids.pad)
    assert all(len(set(row)) == len(row) == 5 and None not in row for row in narrow.items)


def test_free_beam_reads_code_tuples(setup):
    bundle, samples, collate = setup
    ids, codes = bundle.ids, bundle.item_codes
    index = {t: i for i, t in enumerate(codes.tuples)}
    result = R.free_beam(bundle.model, collate(samples[:2]), bundle.tokenizer, ids.n_items, num_beams=4,
                         max_new_tokens=5, eoc_id=ids.eoc, pad_id=ids.pad, codes=index)
    for items, texts in zip(result.items, result.texts):
        for item, text in zip(items, texts):
            assert item == R.parse_item(text, ids.n_items, index)
            if item is not None:
                assert text.replace(" ", "") == "".join(f"<{'abc'[k]}_{c}>" for k, c in enumerate(codes.tuples[item]))


def test_an_lm_that_ignores_the_tree_mask_fails_in_one_line(setup, monkeypatch):
    bundle, samples, collate = setup
    ids, lm = bundle.ids, bundle.model.lang_encoder
    batch = collate(samples[:2])
    checked = T.checked_path_scores(bundle.model, batch, T.code_tree(ids.item_tokens), ids.item_tokens)
    assert lm._unimp_tree_checked
    torch.testing.assert_close(checked, T.path_scores(bundle.model, batch, T.code_tree(ids.item_tokens)))
    real_mask = T._tree_mask

    def everything(real, level, offsets, start, stop, seen, boolean):  # as if the mask were ignored
        return torch.ones_like(real_mask(real, level, offsets, start, stop, seen, True))

    monkeypatch.setattr(T, "_tree_mask", everything)
    monkeypatch.setattr(lm, "_unimp_tree_checked", False)
    with pytest.raises(UnimpError, match="differ from a plain forward pass.*--decode beam"):
        T.checked_path_scores(bundle.model, batch, T.code_tree(ids.item_tokens), ids.item_tokens)


def test_cold_items_take_a_share_of_their_longest_trained_prefix():
    tokens = np.array([[10, 20, 30], [10, 20, 31], [10, 21, 30], [11, 22, 30], [12, 23, 30]])
    trained = np.array([True, False, True, False, True])
    cold = T.ColdItems.build(tokens, trained)
    # item 1 shares (10, 20) with item 0: two items under it; item 3's (11) is no trained item's: the root
    assert cold.items.tolist() == [1, 3] and cold.depth.tolist() == [2, 0]
    assert torch.allclose(cold.log_count.exp(), torch.tensor([2.0, 5.0]))
    assert T.ColdItems.build(tokens, np.ones(5, dtype=bool)) is None
    prefixes = torch.log(torch.tensor([[[1.0, 1.0], [0.6, 0.2], [0.5, 0.1]]]))  # (1, D, K): lengths 0, 1, 2
    scores = cold.apply(torch.zeros(1, 5), prefixes)
    torch.testing.assert_close(scores[0, [1, 3]].exp(), torch.tensor([0.25, 0.2]))
    assert scores[0, [0, 2, 4]].tolist() == [0.0, 0.0, 0.0]


def test_cold_scores_are_the_models_prefix_probabilities(setup):
    bundle, samples, collate = setup
    batch = collate(samples)
    ids = bundle.ids
    tree = T.code_tree(ids.item_tokens)
    tokens = ids.item_tokens.numpy()
    trained = np.ones(ids.n_items, dtype=bool)
    trained[[3, 17]] = False
    cold = T.ColdItems.build(tokens, trained)
    plain = T.path_scores(bundle.model, batch, tree)
    scores = T.checked_path_scores(bundle.model, batch, tree, ids.item_tokens, cold=cold)
    keep = np.setdiff1d(np.arange(ids.n_items), [3, 17])
    torch.testing.assert_close(scores[:, keep], plain[:, keep])
    for item, depth, log_count in zip(cold.items.tolist(), cold.depth.tolist(), cold.log_count.tolist()):
        under = np.flatnonzero((tokens[:, :depth] == tokens[item, :depth]).all(axis=1))  # the prefix's items
        assert np.isclose(np.log(len(under)), log_count)
        # the prefix's probability is the sum of its items' (constrained decoding), split evenly
        want = torch.logsumexp(plain[:, under], dim=1) - log_count
        torch.testing.assert_close(scores[:, item], want, atol=1e-4, rtol=1e-4)
