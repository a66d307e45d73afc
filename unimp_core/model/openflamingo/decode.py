"""The OpenFlamingo decoder: logits at the answer, exact full-catalogue ranking, constrained and free beam
search, text generation (what the tasks' decoders use, as the family's `decoder`; the code-path scores of
semantic ids are in `tree`).

Atomic item ids are single tokens (`item_<i>`), so the model's ranking of the whole catalogue is one forward
pass: the logits at the last prompt position (right after `<answer>`) restricted to the item tokens.
Batches are left-padded, so the last position is the answer position of every row; position ids are
counted from each row's first real token, so a row scores exactly as it would alone (and as in
training, which pads on the right).

Semantic item ids (`--item-ids semantic`) name an item by levels + 1 code tokens. An item's score is the
log-probability of its code path under decoding constrained to real items: at each level the softmax over
the codes that continue a real item from that prefix (`path_scores`). The scores are then a distribution
over the catalogue, a level where the prefix has one continuation costs nothing, and the exact ranking is a
few forward passes per batch (`CodeTree`): the prompt once (its KV cache kept), then every prefix that needs
scoring, each depth in one pass whose tokens attend to the prompt and their own ancestors only (a tree
attention mask). An item that never occurred in training (cold start, `ColdItems`) has codes past its
trained prefix that were never a target, so its full path says nothing; it gets an equal share of its
longest trained prefix's probability instead (what TIGER does with a generated prefix, without its ε).

Beam search is kept for two purposes: `constrained_beam` restricts every step to a prefix trie of valid
item-token sequences, scored the same way (its top-k equals the exact ranking's when the beams hold every
prefix), and `free_beam` generates without constraint and says which outputs are not a valid item id at
all (what the paper's code's evaluation silently counted as misses).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from ...tokens import ANSWER, EOC, ITEM_RE, parse_semantic_item


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counted from each row's first real token (0 on left padding)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def autocast(device: torch.device, precision: str):
    """The autocast context of `precision` ("fp32": none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def answer_logits(model, batch: dict[str, Any], precision: str = "fp32") -> torch.Tensor:
    """Next-token logits after each prompt's last token: (B, V) float32.

    `batch` comes from a left-padding collator (already on the model's device). This is
    `Flamingo.forward` with position ids added (Flamingo.forward does not pass them on).
    """
    return sequence_logits(model, batch, 1, precision)[:, -1]


@torch.no_grad()
def sequence_logits(model, batch: dict[str, Any], keep: int, precision: str = "fp32") -> torch.Tensor:
    """(B, keep, V) float32: the logits of each row's last `keep` positions (left-padded batch)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with autocast(ids.device, precision):
        encode_images(model, batch["vision_x"], batch.get("image_ids"))
        model._condition_media_locations(input_ids=ids)
        try:
            out = _last_logits(model.lang_encoder, ids, mask, keep)
        finally:
            model.lang_encoder.clear_conditioned_layers()
    return out[:, -keep:].float()


def encode_images(model, vision_x: torch.Tensor, image_ids: torch.Tensor | None = None) -> None:
    """Condition the model on a batch's images (`Flamingo._encode_vision_x`), each distinct item once.

    Users share items, so a batch holds the same picture many times; the vision tower and the
    Perceiver see each image on its own, hence encoding the distinct ones and copying their latents
    to every slot is exact. (Not when the Perceiver adds a per-slot time embedding: then as is.)

    Args:
        vision_x: (B, T_img, F, C, H, W) pixels or (B, T_img, F, v, d) cached features.
        image_ids: (B, T_img) item id per slot, -1 for the zero padding slots (from the collator).
    """
    if image_ids is None or getattr(model.perceiver, "media_time_embs", None) is not None:
        model._encode_vision_x(vision_x=vision_x)
        return
    b, t = vision_x.shape[:2]
    flat = image_ids.reshape(-1).to(vision_x.device)  # (B * T_img,)
    distinct, inverse = torch.unique(flat, return_inverse=True)
    slots = torch.arange(flat.numel(), device=flat.device)
    first = torch.full((distinct.numel(),), flat.numel(), device=flat.device, dtype=torch.long)
    first = first.scatter_reduce(0, inverse, slots, reduce="amin")  # first slot showing each distinct image
    model._encode_vision_x(vision_x=vision_x.reshape(b * t, *vision_x.shape[2:])[first][None])  # (1, U, ...)
    layers = model.lang_encoder._get_decoder_layers()
    latents = layers[0].vis_x[0]  # (U, n, d): every layer was conditioned on the same tensor
    latents = latents[inverse].reshape(b, t, *latents.shape[1:])  # (B, T_img, n, d)
    for layer in layers:
        layer.condition_vis_x(latents)


def _last_logits(lm, ids: torch.Tensor, mask: torch.Tensor, keep: int = 1) -> torch.Tensor:
    """(B, keep or T, V) logits; only the last `keep` positions' when the LM supports `logits_to_keep`
    (transformers' causal LMs do: the output head over the whole vocabulary then runs once per row)."""
    kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask))
    if getattr(lm, "_unimp_keeps_logits", True):
        try:
            return lm(**kwargs, logits_to_keep=keep).logits
        except TypeError as exc:  # an LM (e.g. remote code) without the argument
            if "logits_to_keep" not in str(exc):
                raise
            lm._unimp_keeps_logits = False
    return lm(**kwargs).logits


def item_scores(logits: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
    """(B, V) logits -> (B, N) scores of the item tokens, in item-id order."""
    return logits.index_select(1, item_ids.to(logits.device))


# --------------------------------------------------------------------------------- valid item sequences


@dataclass(eq=False, repr=False)
class TokenTrie:
    """Prefix trie of the token sequences that spell a valid item id (a leaf names its item)."""

    children: dict[int, "TokenTrie"] = field(default_factory=dict)
    item: int | None = None

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]]) -> "TokenTrie":
        root = cls()
        for item, seq in enumerate(sequences):
            node = root
            for token in seq:
                node = node.children.setdefault(int(token), cls())
            node.item = item
        return root

    def node(self, prefix: Sequence[int]) -> "TokenTrie | None":
        node: TokenTrie | None = self
        for token in prefix:
            node = node.children.get(int(token)) if node is not None else None
        return node

    def lookup(self, tokens: Sequence[int]) -> int | None:
        """The item spelled by exactly `tokens`, or None."""
        node = self.node(tokens)
        return node.item if node is not None else None

    @property
    def depth(self) -> int:
        """Length of the longest item sequence."""
        return max((1 + c.depth for c in self.children.values()), default=0)


def item_token_sequences(tokenizer, n_items: int, names: Sequence[str] | None = None) -> list[list[int]]:
    """How each item is spelled right after `<answer>`, as token ids (one token each with UniMP's atomic ids;
    `names`: the items' names, e.g. `TaskContext.item_name`'s semantic ids, default `item_<i>`)."""
    answer = tokenizer.convert_tokens_to_ids(ANSWER)
    names = [f"item_{i}" for i in range(n_items)] if names is None else names
    encoded = tokenizer([f"{ANSWER} {name}" for name in names], add_special_tokens=False)["input_ids"]
    out = []
    for ids in encoded:
        ids = ids[ids.index(answer) + 1:] if answer in ids else ids
        # a leading whitespace-only token (a tokenizer without lstrip tokens) is not part of the id
        while len(ids) > 1 and not tokenizer.decode(ids[:1]).strip():
            ids = ids[1:]
        out.append(ids)
    return out


def prefix_constraint(trie: TokenTrie, prompt_len: int, end_id: int,
                      banned: Sequence[set[int]] | None = None) -> Callable[[int, torch.Tensor], list[int]]:
    """A `prefix_allowed_tokens_fn` for HF generate: continue a valid item sequence; at a complete item,
    `end_id` may close it (and must, at a leaf).

    `banned[b]` are items prompt b may not produce (e.g. its history); HF passes the prompt's index in
    the batch as `batch_id`, shared by its beams.
    """
    def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
        node = trie.node(input_ids[prompt_len:].tolist())
        if node is None:  # cannot happen under the constraint; close the sequence
            return [end_id]
        out = list(node.children)
        if banned is not None and banned[batch_id]:
            out = [t for t in out if node.children[t].children or node.children[t].item not in banned[batch_id]]
        if node.item is not None:
            out.append(end_id)
        return out or [end_id]

    return allowed


def trie_processor(trie: TokenTrie, prompt_len: int, end_id: int, num_beams: int,
                   banned: Sequence[set[int]] | None = None):
    """A logits processor for HF beam search that keeps it on the trie and scores each step as `path_scores`
    does: log-softmax over the node's continuations only (a complete item's `end_id` among them), every other
    token -inf; `banned[b]`'s items (prompt b) are then removed without renormalising, so an excluded item
    changes no other item's score."""
    from transformers import LogitsProcessor

    continuations = prefix_constraint(trie, prompt_len, end_id)

    class TrieLogits(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            out = torch.full_like(scores, float("-inf"))
            for row in range(input_ids.shape[0]):
                index = torch.tensor(continuations(row // num_beams, input_ids[row]), device=scores.device)
                out[row, index] = torch.log_softmax(scores[row, index].float(), dim=-1).to(out.dtype)
                ban = banned[row // num_beams] if banned is not None else None
                node = trie.node(input_ids[row, prompt_len:].tolist()) if ban else None
                if node is not None:
                    for token, child in node.children.items():
                        if child.item in ban and not child.children:
                            out[row, token] = float("-inf")
                    if node.item in ban:
                        out[row, end_id] = float("-inf")
            return out

    return TrieLogits()


@torch.no_grad()
def generate(model, batch: dict[str, Any], *, max_new_tokens: int, eos_id: int, pad_id: int, num_beams: int = 1,
             num_return: int = 1, allowed: Callable | None = None, processor: Callable | None = None,
             precision: str = "fp32", min_new_tokens: int = 0,
             length_penalty: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Deterministic generation through `Flamingo.generate` (greedy or beam search).

    Returns:
        (B * num_return, new_tokens) generated ids (prompt removed; rows of one prompt are adjacent,
        best first) and their beam scores (B * num_return,) (None for greedy).
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    kwargs: dict[str, Any] = {}
    if allowed is not None:
        kwargs["prefix_allowed_tokens_fn"] = allowed
    if length_penalty != 1.0:
        kwargs["length_penalty"] = length_penalty
    if processor is not None:
        from transformers import LogitsProcessorList

        kwargs["logits_processor"] = LogitsProcessorList([processor])
    if min_new_tokens:
        kwargs["min_new_tokens"] = min_new_tokens
    with autocast(ids.device, precision):
        out = model.generate(
            batch["vision_x"], ids, attention_mask=mask, position_ids=position_ids(mask),
            num_beams=num_beams, num_return_sequences=num_return, max_new_tokens=max_new_tokens,
            do_sample=False, eos_token_id=eos_id, pad_token_id=pad_id, return_dict_in_generate=True,
            output_scores=num_beams > 1, **kwargs,
        )
    scores = getattr(out, "sequences_scores", None) if num_beams > 1 else None
    return out.sequences[:, ids.shape[1]:], scores


def cut_at(tokens: Sequence[int], stops: set[int]) -> list[int]:
    """The generated tokens before the first stop token (end of chunk, eos, padding)."""
    out = []
    for t in tokens:
        if int(t) in stops:
            break
        out.append(int(t))
    return out


def parse_item(text: str, n_items: int, codes: Mapping[tuple[int, ...], int] | None = None) -> int | None:
    """The item named by a generated answer that is exactly one item id (`item_12`; with `codes`, a semantic
    id's code tuple -> item: `<a_12> <b_7> <c_201> <d_0>`), else None."""
    if codes is not None:
        return codes.get(parse_semantic_item(text.split(EOC, 1)[0].strip()))
    match = ITEM_RE.fullmatch(text.split(EOC, 1)[0].strip())
    if match is None:
        return None
    item = int(match.group(1))
    return item if item < n_items else None


@dataclass
class BeamResult:
    """Per prompt: items best first (None: not a valid item id), beam scores, and the generated texts."""

    items: list[list[int | None]]
    scores: list[list[float]]
    texts: list[list[str]]


def constrained_beam(model, batch: dict[str, Any], trie: TokenTrie, *, num_beams: int, eoc_id: int, pad_id: int,
                     banned: Sequence[set[int]] | None = None, precision: str = "fp32") -> BeamResult:
    """Beam search that can only spell valid item ids (none of `banned[b]` for prompt b), scored as
    `path_scores` scores items (summed, not divided by the length); returns up to `num_beams` distinct items
    per prompt, best first. With `num_beams` at least the number of prefixes of any depth no hypothesis is
    ever dropped, and the ranking is the exact one."""
    prompt_len = batch["input_ids"].shape[1]
    seqs, scores = generate(model, batch, max_new_tokens=trie.depth, eos_id=eoc_id, pad_id=pad_id,
                            num_beams=num_beams, num_return=num_beams, length_penalty=0.0,
                            processor=trie_processor(trie, prompt_len, eoc_id, num_beams, banned), precision=precision)
    stops = {eoc_id, pad_id}
    items = [trie.lookup(cut_at(row, stops)) for row in seqs.tolist()]
    return _distinct(_group(items, scores, [""] * len(items), num_beams))


def _distinct(result: BeamResult) -> BeamResult:
    """Each prompt's items without repeats or non-items: HF fills beams it has no hypothesis for (fewer
    valid prefixes than beams) with copies scored about -1e9, which would list an item twice."""
    items, scores, texts = [], [], []
    for row_items, row_scores, row_texts in zip(result.items, result.scores, result.texts):
        seen: set[int] = set()
        keep = [k for k, item in enumerate(row_items)
                if item is not None and item not in seen and not seen.add(item) and row_scores[k] > -1e8]
        items.append([row_items[k] for k in keep])
        scores.append([row_scores[k] for k in keep])
        texts.append([row_texts[k] for k in keep])
    return BeamResult(items, scores, texts)


def free_beam(model, batch: dict[str, Any], tokenizer, n_items: int, *, num_beams: int, max_new_tokens: int,
              eoc_id: int, pad_id: int, precision: str = "fp32",
              codes: Mapping[tuple[int, ...], int] | None = None) -> BeamResult:
    """Unconstrained beam search; an output counts as an item only if its text is exactly one item id
    (`codes`: semantic ids, code tuple -> item)."""
    seqs, scores = generate(model, batch, max_new_tokens=max_new_tokens, eos_id=eoc_id, pad_id=pad_id,
                            num_beams=num_beams, num_return=num_beams, precision=precision)
    stops = {eoc_id, pad_id}
    spaced = spaced_tokens(tokenizer)
    texts = [decode_answer(tokenizer, cut_at(row, stops), False, spaced) for row in seqs.tolist()]
    return _group([parse_item(t, n_items, codes) for t in texts], scores, texts, num_beams)


def _group(items: list, scores: torch.Tensor | None, texts: list[str], per: int) -> BeamResult:
    flat = scores.float().cpu().tolist() if scores is not None else [0.0] * len(items)
    chunks = range(0, len(items), per)
    return BeamResult([items[i:i + per] for i in chunks], [flat[i:i + per] for i in chunks],
                      [texts[i:i + per] for i in chunks])


def generate_texts(model, batch: dict[str, Any], tokenizer, *, max_new_tokens: int, num_beams: int, eoc_id: int,
                   pad_id: int, eos_id: int | None = None, precision: str = "fp32") -> list[str]:
    """One generated answer per prompt (greedy or the best beam), cut at the end of the chunk."""
    seqs, _ = generate(model, batch, max_new_tokens=max_new_tokens, eos_id=eoc_id, pad_id=pad_id,
                       num_beams=num_beams, num_return=1, precision=precision)
    stops = {eoc_id, pad_id} | ({eos_id} if eos_id is not None else set())
    spaced = spaced_tokens(tokenizer)
    return [decode_answer(tokenizer, cut_at(row, stops), True, spaced) for row in seqs.tolist()]


def spaced_tokens(tokenizer) -> set[int]:
    """Ids of the added tokens that swallow the space before them (lstrip), special ones aside."""
    return {i for i, t in tokenizer.added_tokens_decoder.items() if t.lstrip and not t.special}


def decode_answer(tokenizer, ids: Sequence[int], skip_special_tokens: bool = True,
                  spaced: set[int] | None = None) -> str:
    """Generated ids -> text, giving UniMP's tokens back the space they swallow when encoded.

    `item_<i>`, `rate_<r>`, `s_<j>` are added with lstrip, so a plain decode glues them together
    ([s_2, s_0] -> "s_2s_0"), and an answer naming two slots would parse as none.
    """
    spaced = spaced_tokens(tokenizer) if spaced is None else spaced
    text, run = "", []
    for t in map(int, ids):
        if t not in spaced:
            run.append(t)
            continue
        text += tokenizer.decode(run, skip_special_tokens=skip_special_tokens) if run else ""
        run = []
        text += ("" if not text or text[-1].isspace() else " ") + tokenizer.convert_ids_to_tokens(t)
    if run:
        text += tokenizer.decode(run, skip_special_tokens=skip_special_tokens)
    return text.strip()
