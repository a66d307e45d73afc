"""Semantic item ids in the model: the vocabulary they add, how tokenizers spell them, which ids a run
chooses, and the code tuples a run keeps."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from tests.item_codes import id_codes
from unimp_core.errors import UnimpError
from unimp_core.itemcodes.codes import ItemCodes
from unimp_core.model.openflamingo.spec import ModelSpec
from unimp_core.model.vocab import add_flamingo_tokens, add_unimp_tokens, flamingo_vocab_size, vocab_ids
from unimp_core.specs.model import AUTO_SEMANTIC_ITEMS, ItemCodesRecord
from unimp_core.tokens import ANSWER, EOC, answer_span, semantic_item

from .conftest import N_ITEMS


def codes_for(n_items: int, levels: int = 2, codes: int = 4) -> ItemCodes:
    tuples = id_codes(n_items, levels, codes)
    return ItemCodes(levels, codes, max(t[-1] for t in tuples) + 1, tuple(tuples))


def semantic_spec(codes: ItemCodes) -> ModelSpec:
    return ModelSpec(item_ids="semantic", item_codes=ItemCodesRecord(levels=codes.levels, codes=codes.codes,
                                                                     collision_codes=codes.collision_codes))


@pytest.fixture(scope="module")
def semantic_bundle(dataset):
    from unimp_core.model.openflamingo.factory import build_model

    codes = codes_for(N_ITEMS)
    return build_model(semantic_spec(codes), items_text=dataset, n_items=N_ITEMS, item_codes=codes)


def test_the_vocabulary_grows_by_codes_never_by_items(semantic_bundle, tiny_bundle):
    codes = semantic_bundle.item_codes
    tok, ids = semantic_bundle.tokenizer, semantic_bundle.ids
    added = 1 + 5 + 5 + codes.levels * codes.codes + codes.collision_codes  # answer, rates, slots, codes
    assert len(tok) == flamingo_vocab_size(tok) + added
    assert not any(t.startswith("item_") for t in tok.get_vocab())
    assert len(tiny_bundle.tokenizer) - len(tok) == N_ITEMS - codes.levels * codes.codes - codes.collision_codes
    assert ids.semantic and ids.items.numel() == 0 and ids.n_items == N_ITEMS
    assert [len(level) for level in ids.code_levels] == [4, 4, codes.collision_codes]
    assert ids.item_tokens.shape == (N_ITEMS, codes.levels + 1)
    # the model's embedding rows follow the vocabulary
    assert semantic_bundle.model.lang_encoder.get_input_embeddings().weight.shape[0] == len(tok)


def test_an_item_costs_exactly_levels_plus_one_tokens(semantic_bundle):
    tok, ids, codes = semantic_bundle.tokenizer, semantic_bundle.ids, semantic_bundle.item_codes
    for i in range(N_ITEMS):
        name = semantic_item(codes.tuples[i])
        for text in (name, f"{ANSWER} {answer_span(name)}", f"{ANSWER} {name} {EOC}", f"history {name} next"):
            enc = tok(text, add_special_tokens=False)["input_ids"]
            at = [k for k, t in enumerate(enc) if t == ids.item_tokens[i, 0]]
            assert len(at) == 1 and enc[at[0]:at[0] + 3] == ids.item_tokens[i].tolist(), (text, enc)
    answer = tok(f"{ANSWER} {answer_span(semantic_item(codes.tuples[7]))}", add_special_tokens=False)["input_ids"]
    assert answer == [ids.answer, *ids.item_tokens[7].tolist(), ids.eoc]  # the space after <answer> is absorbed


@pytest.mark.parametrize("kind", ["gpt-neox", "metaspace"])
def test_hf_style_tokenizers_spell_items_the_same_way(kind):
    """The OpenFlamingo presets use GPT-NeoX's byte-level BPE; Llama-style custom LMs a Metaspace one."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = ["what is the next item recommended to the user", "the query based on the history"] * 20
    tok = Tokenizer(models.BPE(unk_token=None if kind == "gpt-neox" else "<unk>"))
    if kind == "gpt-neox":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        alphabet = []
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<unk>"],
                                                       initial_alphabet=alphabet, show_progress=False))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>")
    add_flamingo_tokens(hf)
    codes = codes_for(20, levels=3, codes=3)
    add_unimp_tokens(hf, 20, item_codes=codes)
    ids = vocab_ids(hf, 20, item_codes=codes)  # checks every code token and every item's spelling
    enc = hf(f"the history <answer> {answer_span(semantic_item(codes.tuples[13]))}", add_special_tokens=False)["input_ids"]
    start = enc.index(ids.answer) + 1
    assert enc[start:] == ids.item_tokens[13].tolist() + [ids.eoc]


def test_a_tokenizer_of_other_item_ids_is_refused(semantic_bundle, tiny_bundle):
    codes = semantic_bundle.item_codes
    with pytest.raises(UnimpError, match="item_0"):  # an atomic run's tokenizer
        add_unimp_tokens(copy.deepcopy(tiny_bundle.tokenizer), N_ITEMS, item_codes=codes)
    fewer = ItemCodes(codes.levels, codes.codes - 1, codes.collision_codes, codes.tuples)
    with pytest.raises(UnimpError, match="<a_3>"):
        add_unimp_tokens(copy.deepcopy(semantic_bundle.tokenizer), N_ITEMS, item_codes=fewer)
    with pytest.raises(UnimpError, match="item_ids semantic needs"):
        from unimp_core.model.openflamingo.factory import build_model

        build_model(semantic_spec(codes), items_text=["x"], n_items=N_ITEMS)


def test_a_semantic_bundle_round_trips_through_its_run_folder(semantic_bundle, tmp_path):
    from unimp_core.model.openflamingo.factory import load_bundle, save_bundle

    save_bundle(semantic_bundle, tmp_path)
    again = load_bundle(tmp_path)
    assert again.item_codes == semantic_bundle.item_codes
    assert again.ids.item_tokens.tolist() == semantic_bundle.ids.item_tokens.tolist()
    assert len(again.tokenizer) == len(semantic_bundle.tokenizer)
    table = np.load(tmp_path / "item_codes.npy")
    table[1] = table[0]  # two items with one code tuple
    np.save(tmp_path / "item_codes.npy", table)
    with pytest.raises(UnimpError, match="distinct code tuples"):
        load_bundle(tmp_path)


# ------------------------------------------------------------------------------- choosing the ids


class FakeDataset:
    def __init__(self, n_items: int, codes: bool, root="/data/shop"):
        import polars as pl

        self.items = pl.DataFrame({"item_id": np.arange(n_items)})
        self.root = root
        self.manifest = ({"item_codes": {"levels": 3, "codes": 256, "collision_codes": 4, "sha256": "abc"}}
                         if codes else {})


@pytest.mark.parametrize("n_items,codes,given,chosen", [
    (1_000, True, "auto", "atomic"),
    (AUTO_SEMANTIC_ITEMS + 1, True, "auto", "semantic"),
    (AUTO_SEMANTIC_ITEMS + 1, False, "auto", "atomic"),
    (1_000, True, "semantic", "semantic"),
    (AUTO_SEMANTIC_ITEMS + 1, True, "atomic", "atomic"),
])
def test_auto_is_semantic_only_for_a_large_catalogue_with_codes(n_items, codes, given, chosen):
    from unimp_core.model.item_ids import choose_item_ids

    spec, said = ModelSpec(item_ids=given), []
    spec = choose_item_ids(spec, FakeDataset(n_items, codes), said.append)
    assert spec.item_ids == chosen
    assert (spec.item_codes is not None) == (chosen == "semantic")
    if chosen == "semantic":
        assert spec.item_codes == ItemCodesRecord(levels=3, codes=256, collision_codes=4, sha256="abc")
    # one line whenever auto meets a catalogue above the threshold
    assert len(said) == (given == "auto" and n_items > AUTO_SEMANTIC_ITEMS)
    if said:
        assert "tokenize-items" in said[0] or "semantic" in said[0]


def test_explicit_semantic_without_codes_names_tokenize_items():
    from unimp_core.model.item_ids import choose_item_ids

    with pytest.raises(UnimpError, match=r"no item codes; run `unimp tokenize-items --data /data/shop` first"):
        choose_item_ids(ModelSpec(item_ids="semantic"), FakeDataset(10, False), print)


def test_item_codes_belong_to_semantic_ids_only():
    with pytest.raises(ValueError, match="only for item_ids semantic"):
        ModelSpec(item_ids="atomic", item_codes=ItemCodesRecord(levels=1, codes=2, collision_codes=1))
