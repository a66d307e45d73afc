"""Vocabulary extension, sized from the dataset: OpenFlamingo's tokens, then UniMP's.

Two steps, in the paper's code's order, because an OpenFlamingo checkpoint's embedding matrices are sized for
the first step:
1. `add_flamingo_tokens`: `<|endofchunk|>` and `<image>` (and `<PAD>` when the tokenizer has no pad
   token), exactly as open_flamingo's factory adds them.
2. `add_unimp_tokens`: `<answer>`, `rate_1..rate_5`, selection slots `s_0..s_4`, one `item_<i>` per
   catalogue item (atomic ids) or the code tokens of semantic ids (`<a_0>`.. per level and the collision
   level's, shared by all items: levels * codes + collision codes tokens, no `item_<i>` at all) and, for
   image generation, `img_<k>` code tokens.

UniMP's tokens swallow the space before them (`lstrip`), so "<answer> item_12<|endofchunk|>" is
`<answer>`, `item_12`, `<|endofchunk|>`: prompts are written naturally and an item costs one token
(semantic ids: "<answer> <a_12><b_7><c_201><d_0><|endofchunk|>", an item costs levels + 1 tokens).

New embedding rows (input and output, tied or not) start at the mean of the existing rows (a
pretrained LM), or are drawn as the LM's own random init (the tiny preset's random LM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..errors import UnimpError
from ..tokens import (ANSWER, EOC, IMAGE as MEDIA, ITEM_RE, N_SLOTS, PAD, RATINGS, SEMANTIC_LEVELS, SEMANTIC_TOKEN_RE,
                      answer_span, image_code_token, item_token, rate_token, semantic_item, semantic_token,
                      semantic_vocabulary, slot_token)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..itemcodes.codes import ItemCodes

# How many items' full spellings `vocab_ids` encodes to check that each costs exactly levels + 1 tokens (every
# code token is checked on its own; the items only repeat that check in every combination's layout).
SPELLING_CHECKS = 1000


def code_token_lists(codes: Any) -> list[list[str]]:
    """Semantic ids' tokens per level (`codes`: ItemCodes or the spec's ItemCodesRecord)."""
    return semantic_vocabulary(codes.levels, codes.codes, codes.collision_codes)


def unimp_tokens(n_items: int, image_gen_codes: int = 0, item_codes: Any = None) -> list[str]:
    """UniMP's added tokens in the order they get ids (answer, ratings, slots, items, image codes).

    With `item_codes` (semantic ids: ItemCodes or an ItemCodesRecord) the items are the code tokens of every
    level instead of one `item_<i>` each."""
    items = ([t for level in code_token_lists(item_codes) for t in level] if item_codes is not None
             else [item_token(i) for i in range(n_items)])
    return (
        [ANSWER]
        + [rate_token(r) for r in RATINGS]
        + [slot_token(s) for s in range(N_SLOTS)]
        + items
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
    # [lo, hi): the tokens that name items (atomic `item_<i>`, or semantic code tokens), when they are one
    # contiguous block of the vocabulary, as unimp adds them; None otherwise
    item_range: tuple[int, int] | None
    # [lo, hi): the tokens an item's name begins with (atomic `item_<i>`, or a semantic id's first-level codes)
    item_starts: tuple[int, int] | None


def item_token_range(tokenizer: Any, starts: bool = False) -> tuple[int, int] | None:
    """[lo, hi) of the item-naming tokens (`starts`: of those an item's name begins with) when every id in it
    is one (and there is at least one)."""
    def names_items(token: str) -> bool:
        code = SEMANTIC_TOKEN_RE.fullmatch(token)
        return bool(ITEM_RE.fullmatch(token) or (code and (not starts or code.group(1) == SEMANTIC_LEVELS[0])))

    ids = [i for t, i in tokenizer.get_added_vocab().items() if names_items(t)]
    if not ids:
        return None
    lo, hi = min(ids), max(ids) + 1
    return (lo, hi) if hi - lo == len(ids) else None


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
                      bos=tokenizer.bos_token_id, eos=eos, item_range=item_token_range(tokenizer),
                      item_starts=item_token_range(tokenizer, starts=True))


@dataclass(frozen=True)
class VocabIds(SpecialIds):
    """Token ids the tasks, the loss and generation need: the collator's, plus every added token.

    Atomic ids: `items[i]` is the id of `item_<i>`, so item logits are `logits[..., ids.items]` (item-id order).
    Semantic ids: `items` is empty and `code_levels[k]` holds level k's token ids (code order). Either way
    `item_tokens[i]` is the token sequence that names item i after `<answer>`.
    """

    rates: list[int]  # rates[r - 1] is rate_<r>
    slots: list[int]  # slots[j] is s_<j>
    items: torch.Tensor  # (N,) long; (0,) under semantic ids
    image_codes: torch.Tensor  # (K,) long; empty when image generation is off
    item_tokens: torch.Tensor  # (N, D) long: D = 1 (atomic) or levels + 1 (semantic)
    code_levels: list[torch.Tensor]  # semantic ids: (codes,) per level, then (collision_codes,); [] when atomic

    @property
    def n_items(self) -> int:
        return int(self.item_tokens.shape[0])

    @property
    def semantic(self) -> bool:
        return bool(self.code_levels)


def add_flamingo_tokens(tokenizer: "PreTrainedTokenizerBase") -> None:
    """Add open_flamingo's special tokens (no-op when present), as its `create_model_and_transforms` does."""
    tokenizer.add_special_tokens({"additional_special_tokens": [EOC, MEDIA]})
    if tokenizer.pad_token is None:
        # GPT-style tokenizers have no pad token; labels and batching need one
        tokenizer.add_special_tokens({"pad_token": PAD})


def add_unimp_tokens(tokenizer: "PreTrainedTokenizerBase", n_items: int, image_gen_codes: int = 0,
                     item_codes: Any = None) -> None:
    """Add UniMP's tokens (those already present are kept, so a saved tokenizer re-extends to itself).

    `item_codes` (ItemCodes or an ItemCodesRecord): semantic ids, whose code tokens replace the item tokens."""
    from transformers import AddedToken

    if n_items < 1:
        raise UnimpError(f"model: the catalogue has {n_items} items; at least one is needed for item tokens")
    stray = _stray_item_tokens(tokenizer, n_items, item_codes)
    if stray and item_codes is None:
        raise UnimpError(f"tokenizer: holds {stray} but the dataset has only {n_items} items (a tokenizer from another dataset?)")
    if stray:
        raise UnimpError(f"tokenizer: holds {stray}, which these semantic ids ({item_codes.levels} levels of "
                         f"{item_codes.codes} codes + {item_codes.collision_codes}) do not have (a tokenizer of other "
                         "item ids?)")
    # added in one call so ids follow unimp_tokens() order; <answer> is special (skipped when decoding)
    tokenizer.add_tokens([AddedToken(ANSWER, lstrip=True, special=True)], special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, lstrip=True) for t in unimp_tokens(n_items, image_gen_codes, item_codes)[1:]])


def _stray_item_tokens(tokenizer: "PreTrainedTokenizerBase", n_items: int, item_codes: Any = None) -> str | None:
    vocab = tokenizer.get_vocab()
    if item_codes is None:
        beyond = [item_token(n_items)]
    else:  # an atomic tokenizer, or one with more codes on some level, more collisions or more levels
        levels = item_codes.levels
        beyond = ([item_token(0)] + [semantic_token(k, item_codes.codes) for k in range(levels)]
                  + [semantic_token(levels, item_codes.collision_codes), semantic_token(levels + 1, 0)])
    return next((t for t in beyond if t in vocab), None)


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


def vocab_ids(tokenizer: "PreTrainedTokenizerBase", n_items: int, image_gen_codes: int = 0,
              item_codes: "ItemCodes | None" = None) -> VocabIds:
    """Look up (and check) every id the model needs; each added token must encode as exactly one token.

    With `item_codes` (semantic ids) every code token is checked the same way, and the first items'
    spellings must encode as exactly their levels + 1 tokens."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (MEDIA, EOC, *unimp_tokens(n_items, image_gen_codes, item_codes)) if t not in vocab]
    if missing:
        raise UnimpError(f"tokenizer: missing added token(s) {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise UnimpError("tokenizer: needs a pad and an end-of-sequence token")
    if item_codes is not None and item_codes.n_items != n_items:
        raise UnimpError(f"model: the item codes name {item_codes.n_items} items, the catalogue has {n_items}")
    if item_codes is None:
        names = [item_token(i) for i in range(n_items)]
        item_ids = _one_token_each(tokenizer, names)
        items = torch.tensor(item_ids, dtype=torch.long, device="cpu")
        item_tokens, code_levels = items[:, None], []
    else:
        code_levels = [torch.tensor(_one_token_each(tokenizer, level), dtype=torch.long, device="cpu")
                       for level in code_token_lists(item_codes)]
        tuples = torch.tensor(item_codes.tuples, dtype=torch.long, device="cpu")  # (N, levels + 1)
        item_tokens = torch.stack([code_levels[k][tuples[:, k]] for k in range(tuples.shape[1])], dim=1)
        _check_spellings(tokenizer, item_codes, item_tokens, vocab)
        items = torch.zeros(0, dtype=torch.long, device="cpu")
    single_token_id(tokenizer, ANSWER)  # the answer marker must encode alone, inside a sentence too
    base = special_ids(tokenizer)
    return VocabIds(
        image=base.image, eoc=base.eoc, answer=base.answer, pad=base.pad, bos=base.bos, eos=base.eos,
        item_range=base.item_range, item_starts=base.item_starts,
        rates=[single_token_id(tokenizer, rate_token(r)) for r in RATINGS],
        slots=[single_token_id(tokenizer, slot_token(s)) for s in range(N_SLOTS)],
        items=items,
        image_codes=torch.tensor([single_token_id(tokenizer, image_code_token(k)) for k in range(image_gen_codes)],
                                 dtype=torch.long, device="cpu"),
        item_tokens=item_tokens, code_levels=code_levels,
    )


def _one_token_each(tokenizer: "PreTrainedTokenizerBase", tokens: list[str]) -> list[int]:
    """The ids of added `tokens`, checked in one batch: each comes back as exactly itself, one id, in a sentence."""
    vocab = tokenizer.get_vocab()
    token_ids = [vocab[t] for t in tokens]
    encoded = tokenizer([f"{ANSWER} {answer_span(t)}" for t in tokens], add_special_tokens=False)["input_ids"]
    answer, eoc = vocab[ANSWER], vocab[EOC]
    for token, tid, ids in zip(tokens, token_ids, encoded):
        rest = [t for t in ids if t not in (answer, eoc, tid)]
        # besides the markers only the token itself and whitespace may remain
        if ids.count(tid) != 1 or (rest and tokenizer.decode(rest).strip()):
            pieces = tokenizer.convert_ids_to_tokens(ids)
            raise UnimpError(f"tokenizer: {token!r} does not encode as one token (got {pieces})")
    return token_ids


def _check_spellings(tokenizer: "PreTrainedTokenizerBase", item_codes: "ItemCodes", item_tokens: torch.Tensor,
                     vocab: dict[str, int]) -> None:
    """The first SPELLING_CHECKS items' names encode as exactly their code tokens after `<answer>`."""
    n = min(SPELLING_CHECKS, item_codes.n_items)
    texts = [f"{ANSWER} {answer_span(semantic_item(item_codes.tuples[i]))}" for i in range(n)]
    answer, eoc = vocab[ANSWER], vocab[EOC]
    for i, ids in enumerate(tokenizer(texts, add_special_tokens=False)["input_ids"]):
        inner = ids[ids.index(answer) + 1:] if answer in ids else ids
        inner = inner[:inner.index(eoc)] if eoc in inner else inner
        while inner and not tokenizer.decode(inner[-1:]).strip():  # the space before <|endofchunk|>
            inner = inner[:-1]
        if inner != item_tokens[i].tolist():
            raise UnimpError(f"tokenizer: item {i}'s semantic id {semantic_item(item_codes.tuples[i])!r} does not encode "
                             f"as its {item_tokens.shape[1]} code tokens (got {tokenizer.convert_ids_to_tokens(ids)})")


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


def scale_input_embeddings(lm: "PreTrainedModel", factor: float) -> None:
    """Multiply what `lm`'s input embedding returns by `factor`; the output head (tied or not) is untouched.

    A multiplier, not a larger init: tied rows keep their size as answers, and under Adam (steps of about
    lr whatever the gradient's scale) the rows move `factor` times faster as inputs."""
    lm.get_input_embeddings().register_forward_hook(lambda module, args, output: output * factor)
