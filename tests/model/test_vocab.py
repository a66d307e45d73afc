import pytest
import torch

from unimp_core.errors import UnimpError
from unimp_core.model.vocab import (ANSWER, EOC, MEDIA, add_flamingo_tokens, add_unimp_tokens, flamingo_vocab_size,
                                    item_token, resize_embeddings, unimp_tokens, vocab_ids)

from .conftest import N_ITEMS


def test_every_item_is_one_token(tiny_bundle):
    tok, ids = tiny_bundle.tokenizer, tiny_bundle.ids
    assert ids.items.dtype == torch.long and ids.items.shape == (N_ITEMS,)
    for i in range(N_ITEMS):
        for text in (item_token(i), f"{ANSWER} {item_token(i)}{EOC}", f"history items and {item_token(i)} next"):
            enc = tok(text, add_special_tokens=False)["input_ids"]
            assert enc.count(int(ids.items[i])) == 1, (text, tok.convert_ids_to_tokens(enc))
    # item_1 never matches inside item_12 (longest match wins)
    enc = tok("item_12", add_special_tokens=False)["input_ids"]
    assert enc == [int(ids.items[12])]


def test_answer_span_tokens(tiny_bundle):
    tok, ids = tiny_bundle.tokenizer, tiny_bundle.ids
    enc = tok(f"What next? {ANSWER} item_7{EOC}", add_special_tokens=False)["input_ids"]
    start = enc.index(ids.answer)
    # the space before an added UniMP token is absorbed: <answer> is followed by the item directly
    assert enc[start + 1] == int(ids.items[7]) and enc[-1] == ids.eoc
    rates = tok("rate_1 rate_5 s_0 s_4", add_special_tokens=False)["input_ids"]
    assert rates == [ids.rates[0], ids.rates[4], ids.slots[0], ids.slots[4]]


def test_ids_are_distinct_and_in_item_order(tiny_bundle):
    ids, tok = tiny_bundle.ids, tiny_bundle.tokenizer
    specials = [ids.answer, ids.eoc, ids.image, ids.pad, ids.eos, *ids.rates, *ids.slots]
    everything = specials + ids.items.tolist()
    assert len(set(everything)) == len(everything)
    assert tok.convert_ids_to_tokens(ids.items.tolist()) == [item_token(i) for i in range(N_ITEMS)]
    assert ids.image == tok.convert_tokens_to_ids(MEDIA) and ids.image_codes.numel() == 0
    assert len(tok) == flamingo_vocab_size(tok) + len(unimp_tokens(N_ITEMS))


def test_image_code_tokens(dataset):
    from unimp_core.model.tokenizer import dataset_texts, train_bpe_tokenizer

    tok = train_bpe_tokenizer(dataset_texts(dataset), 400)
    add_flamingo_tokens(tok)
    add_unimp_tokens(tok, 5, image_gen_codes=16)
    ids = vocab_ids(tok, 5, 16)
    assert ids.image_codes.shape == (16,)
    assert tok("img_15 img_1", add_special_tokens=False)["input_ids"] == [ids.image_codes[15], ids.image_codes[1]]


def test_extension_is_idempotent_and_rejects_another_catalogue(tiny_bundle):
    import copy

    tok = copy.deepcopy(tiny_bundle.tokenizer)
    before = len(tok)
    add_flamingo_tokens(tok)
    add_unimp_tokens(tok, N_ITEMS)
    assert len(tok) == before
    with pytest.raises(UnimpError, match="only 3 items"):
        add_unimp_tokens(tok, 3)


def test_new_embedding_rows_are_the_mean_or_drawn():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    for std in (None, 0.02):  # a pretrained LM's mean; a random LM's own init
        lm = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                              num_attention_heads=2, intermediate_size=32))
        old = [w.detach().clone() for w in (lm.get_input_embeddings().weight, lm.get_output_embeddings().weight)]
        resize_embeddings(lm, 540, std=std)
        for before, weight in zip(old, (lm.get_input_embeddings().weight, lm.get_output_embeddings().weight)):
            assert weight.shape == (540, 16)
            torch.testing.assert_close(weight[:40], before)  # the old rows were left alone
            if std is None:
                torch.testing.assert_close(weight[40:], before.mean(0).expand(500, -1))
            else:
                assert abs(weight[40:].std().item() - std) < 0.1 * std
                assert torch.cdist(weight[40:], weight[40:]).add(torch.eye(500)).min() > 0.01


def test_resize_handles_tied_embeddings():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, tie_word_embeddings=True))
    old = lm.get_input_embeddings().weight[:50].clone()
    resize_embeddings(lm, 60)
    inp, out = lm.get_input_embeddings().weight, lm.get_output_embeddings().weight
    assert inp.shape == (60, 16) and out.data_ptr() == inp.data_ptr()
    torch.testing.assert_close(inp[:50], old)
    torch.testing.assert_close(inp[50:], old.mean(0).expand(10, -1))
