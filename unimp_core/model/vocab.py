"""Vocabulary extension, sized from the dataset: OpenFlamingo's tokens, then UniMP's.

Two steps, in the paper's code's order, because an OpenFlamingo checkpoint's embedding matrices are sized for
the first step:
1. `add_flamingo_tokens`: `<|endofchunk|>` and `<image>` (and `<PAD>` when the tokenizer has no pad
   token), exactly as open_flamingo's factory adds them.
2. `add_unimp_tokens`: `<answer>`, `rate_1..rate_5`, selection slots `s_0..s_4`, one `item_<i>` per
   catalogue item and, for image generation, `img_<k>` code tokens.

UniMP's tokens swallow the space before them (`lstrip`), so "<answer> item_12<|endofchunk|>" is
`<answer>`, `item_12`, `<|endofchunk|>`: prompts are written naturally and an item costs one token.

New embedding rows (input and output, tied or not) start at the mean of the existing rows (a
pretrained LM), or are drawn as the LM's own random init (the tiny preset's random LM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..errors import UnimpError
from ..tokens import (ANSWER, EOC, IMAGE as MEDIA, N_SLOTS, PAD, RATINGS, answer_span, image_code_token, item_token,
                      rate_token, slot_token)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase



def unimp_tokens(n_items: int, image_gen_codes: int = 0) -> list[str]:
    """UniMP's added tokens in the order they get ids (answer, ratings, slots, items, image codes)."""
    return (
        [ANSWER]
        + [rate_token(r) for r in RATINGS]
        + [slot_token(s) for s in range(N_SLOTS)]
        + [item_token(i) for i in range(n_items)]
        + [image_code_token(k) for k in range(image_gen_codes)]
    )


@dataclass(frozen=True)
class SpecialIds:
    """Token ids the collator needs, looked up once."""

    image: int
    eoc: int
    answer: int
    pad: int
    bos: int | None
    eos: int | None


def special_ids(tokenizer: Any) -> SpecialIds:
    """Look up `<image>`, `<|endofchunk|>`, `<answer>`, pad, bos and eos in a HF tokenizer."""
    def lookup(token: str) -> int:
        tid = tokenizer.convert_tokens_to_ids(token)
        unk = getattr(tokenizer, "unk_token_id", None)
        if tid is None or (tid == unk and token != getattr(tokenizer, "unk_token", None)):
            raise UnimpError(f"tokenizer: special token {token} is missing from the vocabulary")
        return int(tid)

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = eos if eos is not None else 0  # pad ids are masked everywhere, any id will do
    return SpecialIds(image=lookup(MEDIA), eoc=lookup(EOC), answer=lookup(ANSWER), pad=int(pad),
                      bos=tokenizer.bos_token_id, eos=eos)


@dataclass(frozen=True)
class VocabIds(SpecialIds):
    """Token ids the tasks, the loss and generation need: the collator's, plus every added token.

    `items[i]` is the id of `item_<i>`, so item logits are `logits[..., ids.items]` (item-id order).
    """

    rates: list[int]  # rates[r - 1] is rate_<r>
    slots: list[int]  # slots[j] is s_<j>
    items: torch.Tensor  # (N,) long
    image_codes: torch.Tensor  # (K,) long; empty when image generation is off

    @property
    def n_items(self) -> int:
        return int(self.items.numel())


def add_flamingo_tokens(tokenizer: "PreTrainedTokenizerBase") -> None:
    """Add open_flamingo's special tokens (no-op when present), as its `create_model_and_transforms` does."""
    tokenizer.add_special_tokens({"additional_special_tokens": [EOC, MEDIA]})
    if tokenizer.pad_token is None:
        # GPT-style tokenizers have no pad token; labels and batching need one
        tokenizer.add_special_tokens({"pad_token": PAD})


def add_unimp_tokens(tokenizer: "PreTrainedTokenizerBase", n_items: int, image_gen_codes: int = 0) -> None:
    """Add UniMP's tokens (those already present are kept, so a saved tokenizer re-extends to itself)."""
    from transformers import AddedToken

    if n_items < 1:
        raise UnimpError(f"model: the catalogue has {n_items} items; at least one is needed for item tokens")
    stray = _stray_item_tokens(tokenizer, n_items)
    if stray:
        raise UnimpError(f"tokenizer: holds {stray} but the dataset has only {n_items} items (a tokenizer from another dataset?)")
    # added in one call so ids follow unimp_tokens() order; <answer> is special (skipped when decoding)
    tokenizer.add_tokens([AddedToken(ANSWER, lstrip=True, special=True)], special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, lstrip=True) for t in unimp_tokens(n_items, image_gen_codes)[1:]])


def _stray_item_tokens(tokenizer: "PreTrainedTokenizerBase", n_items: int) -> str | None:
    vocab = tokenizer.get_vocab()
    beyond = item_token(n_items)
    return beyond if beyond in vocab else None


def base_vocab_size(tokenizer: "PreTrainedTokenizerBase") -> int:
    """Vocabulary size before any added token (the LM's own): the id of `<|endofchunk|>`, the first one."""
    eoc = tokenizer.get_vocab().get(EOC)
    return eoc if eoc is not None else len(tokenizer)


def flamingo_vocab_size(tokenizer: "PreTrainedTokenizerBase") -> int:
    """Vocabulary size after step 1 only: what an OpenFlamingo checkpoint's embeddings are sized for.

    For a tokenizer already extended by step 2 (one saved in a run) it is the id of `<answer>`, the
    first UniMP token.
    """
    answer = tokenizer.get_vocab().get(ANSWER)
    return answer if answer is not None else len(tokenizer)


def single_token_id(tokenizer: "PreTrainedTokenizerBase", token: str) -> int:
    """The id `token` encodes to, alone and inside a sentence after a space; raise if it splits."""
    texts = [token, f"x {token} y"] + ([f"{ANSWER} {answer_span(token)}"] if token != ANSWER else [])
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces = tokenizer.convert_ids_to_tokens(ids)
        if pieces.count(token) != 1:
            raise UnimpError(f"tokenizer: {token!r} does not encode as one token in {text!r} (got {pieces})")
    return tokenizer.convert_tokens_to_ids(token)


def vocab_ids(tokenizer: "PreTrainedTokenizerBase", n_items: int, image_gen_codes: int = 0) -> VocabIds:
    """Look up (and check) every id the model needs; each added token must encode as exactly one token."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (MEDIA, EOC, *unimp_tokens(n_items, image_gen_codes)) if t not in vocab]
    if missing:
        raise UnimpError(f"tokenizer: missing added token(s) {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise UnimpError("tokenizer: needs a pad and an end-of-sequence token")
    # The batched check: every item token must come back as exactly itself, one id, in a sentence.
    item_ids = [vocab[item_token(i)] for i in range(n_items)]
    texts = [f"{ANSWER} {answer_span(item_token(i))}" for i in range(n_items)]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    answer, eoc = vocab[ANSWER], vocab[EOC]
    for i, ids in enumerate(encoded):
        rest = [t for t in ids if t not in (answer, eoc, item_ids[i])]
        # besides the markers only the item token itself and whitespace may remain
        if ids.count(item_ids[i]) != 1 or (rest and tokenizer.decode(rest).strip()):
            pieces = tokenizer.convert_ids_to_tokens(ids)
            raise UnimpError(f"tokenizer: {item_token(i)!r} does not encode as one token (got {pieces})")
    single_token_id(tokenizer, ANSWER)  # the answer marker must encode alone, inside a sentence too
    base = special_ids(tokenizer)
    return VocabIds(
        image=base.image, eoc=base.eoc, answer=base.answer, pad=base.pad, bos=base.bos, eos=base.eos,
        rates=[single_token_id(tokenizer, rate_token(r)) for r in RATINGS],
        slots=[single_token_id(tokenizer, slot_token(s)) for s in range(N_SLOTS)],
        items=torch.tensor(item_ids, dtype=torch.long, device="cpu"),
        image_codes=torch.tensor([single_token_id(tokenizer, image_code_token(k)) for k in range(image_gen_codes)],
                                 dtype=torch.long, device="cpu"),
    )


def resize_embeddings(lm: "PreTrainedModel", new_size: int, std: float | None = None) -> None:
    """Resize the LM's input and output embeddings to `new_size` rows.

    New rows get the mean of the old (`std` None: a pretrained LM), or are drawn from N(0, std^2) (a
    randomly initialised LM, with its own init's std). The mean is the neutral start for a
    new token of a pretrained LM: it is where an "average" token sits, so a new token neither dominates
    the softmax nor starts far from the rest. In a random LM that mean is a near-zero vector shared by
    every new token: thousands of item tokens would start as one identical input and output vector, and
    the model could not tell the items in a history apart until training slowly separated them.
    Tied embeddings are set once.
    """
    inp = lm.get_input_embeddings()
    old = inp.weight.shape[0]
    if new_size == old:
        return
    try:
        lm.resize_token_embeddings(new_size, mean_resizing=False)
    except TypeError:  # transformers < 4.46 has no mean_resizing; we set the rows below anyway
        lm.resize_token_embeddings(new_size)
    if new_size < old:
        return
    inp = lm.get_input_embeddings()
    out = lm.get_output_embeddings()
    with torch.no_grad():
        _new_rows(inp.weight, old, std)
        if out is not None and out.weight is not inp.weight:
            _new_rows(out.weight, old, std)
            if getattr(out, "bias", None) is not None:
                _new_rows(out.bias, old, None if std is None else 0.0)


def _new_rows(weight: torch.Tensor, old: int, std: float | None) -> None:
    if std is None:
        _mean_rows(weight, old)
    else:
        weight[old:] = torch.randn_like(weight[old:]) * std


def _mean_rows(weight: torch.Tensor, old: int) -> None:
    """Set rows [old:] of `weight` to the mean of rows [:old] (in place)."""
    mean = weight[:old].float().mean(dim=0).to(weight.dtype)
    weight[old:] = mean
