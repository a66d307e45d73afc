"""Scoring items with the Flamingo model: exact full-catalogue ranking, constrained and free beam search.

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
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ...errors import UnimpError
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


def exclusion_mask(histories: Sequence[Sequence[int]], targets: Sequence[int] | None, n_items: int,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, N) bool: True for each user's history items, except the user's target (never removed)."""
    mask = torch.zeros((len(histories), n_items), dtype=torch.bool)
    for row, items in enumerate(histories):
        if len(items):
            mask[row, torch.as_tensor(list(items), dtype=torch.long)] = True
    if targets is not None:
        mask[torch.arange(len(histories)), torch.as_tensor(list(targets), dtype=torch.long)] = False
    return mask.to(device)


def top_items(scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best items of each row: (B, k) scores and (B, k) item ids, best first.

    Equal scores are ordered by item id (a stable sort), so the lists are deterministic. Excluded items
    (a (B, N) bool mask) score -inf: they come last, and only when a row has fewer than k others; callers
    that list items drop them.
    """
    if exclude is not None:
        scores = scores.masked_fill(exclude, float("-inf"))
    k = min(k, scores.shape[1])
    values, order = torch.sort(scores, dim=1, descending=True, stable=True)
    return values[:, :k], order[:, :k]


# ------------------------------------------------------------------------ semantic ids: exact path scores

# Attention scores (rows x heads x new tokens x cached tokens) one pass over the code tree may hold: the
# prefixes of a depth are fed in chunks below this (2^25 float32 scores: 128 MiB).
TREE_CHUNK_SCORES = 1 << 25
# Prefixes per pass that leave the cache after it: each pass's tokens also attend to each other (masked, but
# computed), so small chunks cost less; large enough that a pass is not dominated by its overhead.
TREE_CHUNK = 128


@dataclass(eq=False)
class TreeLevel:
    """Depth d of the code tree (d tokens of an item spelled): the prefixes fed to the model at this depth and
    how the token after them is scored.

    A prefix is fed when its next token is scored (it has 2+ continuations) or when it leads to such a
    prefix (whose tokens must see its keys and values); depth 0's one prefix is the prompt itself. The
    `kept` prefixes that lead to deeper fed ones come first: they stay in the KV cache, the others are
    dropped from it after their pass (no later token attends to them).
    """

    vocab: torch.Tensor  # (C,) token ids that can follow a depth-d prefix
    tokens: torch.Tensor  # (F,) the last token of each fed prefix (depth 0: none)
    kept: int  # the first `kept` fed prefixes are ancestors of deeper fed ones
    ancestors: torch.Tensor  # (F, d - 1) each fed prefix's ancestors, as indices among the fed prefixes of depths 1..d-1
    scored: torch.Tensor  # (S,) ascending indices among the fed prefixes of those with 2+ continuations
    allowed: torch.Tensor  # (S, C) bool: the continuations of each scored prefix
    items: torch.Tensor  # (M,) the items whose depth-d prefix is scored, in `flat` order
    flat: torch.Tensor  # (M,) ascending: scored index * C + vocab index of each such item's next token


@dataclass(eq=False)
class CodeTree:
    """The prefix tree of the items' token sequences (all of one length), laid out for `path_scores`."""

    levels: list[TreeLevel]  # depths 0 .. D-1
    n_items: int

    @property
    def fed(self) -> int:
        """Prefix tokens fed per prompt (besides the prompt itself)."""
        return sum(len(level.tokens) for level in self.levels)

    @classmethod
    def build(cls, item_tokens: np.ndarray) -> "CodeTree":
        seqs = np.asarray(item_tokens, dtype=np.int64)  # (N, D)
        n, depth = seqs.shape
        # node[d][i]: item i's depth-d prefix, numbered among that depth's distinct prefixes
        node = [np.zeros(n, dtype=np.int64)]
        for d in range(1, depth + 1):
            node.append(np.unique(seqs[:, :d], axis=0, return_inverse=True)[1].reshape(-1))
        count = [int(x.max()) + 1 for x in node]
        parent, token = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        for d in range(1, depth + 1):
            some_item = np.zeros(count[d], dtype=np.int64)
            some_item[node[d]] = np.arange(n)
            parent.append(node[d - 1][some_item])
            token.append(seqs[some_item, d - 1])
        scored = [np.bincount(parent[d + 1], minlength=count[d]) >= 2 for d in range(depth)]
        fed = [np.ones(1, dtype=bool)] + [None] * (depth - 1)
        for d in range(depth - 1, 0, -1):  # a prefix is fed if scored or if one of its children is fed
            fed[d] = scored[d].copy()
            if d + 1 < depth:
                fed[d][parent[d + 1][fed[d + 1]]] = True
        # kept (has a fed child) first, then the rest, each in prefix order
        leads = [np.zeros(count[d], dtype=bool) for d in range(depth)]
        for d in range(1, depth - 1):
            leads[d][parent[d + 1][fed[d + 1]]] = True
        fed_nodes = [np.array([0])] + [np.concatenate([np.flatnonzero(fed[d] & leads[d]), np.flatnonzero(fed[d] & ~leads[d])])
                                       for d in range(1, depth)]
        fed_index = []
        for d in range(depth):
            index = np.full(count[d], -1, dtype=np.int64)
            index[fed_nodes[d]] = np.arange(len(fed_nodes[d]))
            fed_index.append(index)
        levels = []
        for d in range(depth):
            nodes = fed_nodes[d]
            ancestors, up = [], nodes
            for j in range(d - 1, 0, -1):
                up = parent[j + 1][up]
                ancestors.insert(0, fed_index[j][up])
            vocab = np.unique(seqs[:, d])
            s_nodes = np.flatnonzero(scored[d])
            s_nodes = s_nodes[np.argsort(fed_index[d][s_nodes], kind="stable")]  # ascending among the fed
            position = np.full(count[d], -1, dtype=np.int64)
            position[s_nodes] = np.arange(len(s_nodes))
            rows, cols = position[node[d]], np.searchsorted(vocab, seqs[:, d])
            allowed = np.zeros((len(s_nodes), len(vocab)), dtype=bool)
            hit = rows >= 0
            allowed[rows[hit], cols[hit]] = True
            flat = rows[hit] * len(vocab) + cols[hit]
            order = np.argsort(flat, kind="stable")
            levels.append(TreeLevel(
                vocab=torch.from_numpy(vocab),
                tokens=torch.from_numpy(token[d][nodes] if d else np.zeros(0, dtype=np.int64)),
                kept=int(leads[d][nodes].sum()) if d else 0,
                ancestors=torch.from_numpy(np.stack(ancestors, axis=1) if ancestors
                                           else np.zeros((len(nodes), 0), dtype=np.int64)),
                scored=torch.from_numpy(fed_index[d][s_nodes]),
                allowed=torch.from_numpy(allowed),
                items=torch.from_numpy(np.flatnonzero(hit)[order]),
                flat=torch.from_numpy(flat[order]),
            ))
        return cls(levels, n)


_TREES: dict[int, CodeTree] = {}


def code_tree(item_tokens: torch.Tensor) -> CodeTree:
    """The CodeTree of a (N, D) item-token tensor (e.g. `VocabIds.item_tokens`), built once per tensor."""
    key = id(item_tokens)
    if key not in _TREES:
        _TREES[key] = CodeTree.build(item_tokens.cpu().numpy())
        weakref.finalize(item_tokens, _TREES.pop, key, None)
    return _TREES[key]


@dataclass(eq=False)
class ColdItems:
    """The items the model never saw in training, and how each is scored: the log-probability of its longest
    code prefix that some trained item shares, split evenly among all the items under that prefix.

    Under decoding constrained to real items, a prefix's probability is the sum of its items'. The codes
    after a cold item's trained prefix were never a target after that prefix, so the model's path score
    for it is an accident of initialisation (trained models put it near the bottom); its share of the prefix
    is what the model knows about it: its content neighbours' mean probability.
    """

    items: torch.Tensor  # (K,) cold item ids, ascending
    depth: torch.Tensor  # (K,) tokens in each one's longest prefix shared with a trained item (0: none)
    log_count: torch.Tensor  # (K,) log of the catalogue items under that prefix

    @classmethod
    def build(cls, item_tokens: np.ndarray, trained: np.ndarray) -> "ColdItems | None":
        """`item_tokens` (N, D), `trained` (N,) bool; None when every item was trained."""
        seqs = np.asarray(item_tokens, dtype=np.int64)
        cold = np.flatnonzero(~np.asarray(trained, dtype=bool))
        if not len(cold):
            return None
        n, depth = seqs.shape
        best = np.zeros(len(cold), dtype=np.int64)
        count = np.full(len(cold), n, dtype=np.int64)  # depth 0: the whole catalogue
        for d in range(1, depth):  # a full path is one item's own: never shared with a trained item
            node = np.unique(seqs[:, :d], axis=0, return_inverse=True)[1].reshape(-1)
            shared = np.bincount(node[trained], minlength=node.max() + 1) > 0
            hit = shared[node[cold]]
            best[hit] = d
            count[hit] = np.bincount(node)[node[cold][hit]]
        return cls(torch.from_numpy(cold), torch.from_numpy(best), torch.from_numpy(np.log(count)).float())

    def apply(self, scores: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor:
        """`scores` (B, N) with the cold items' rows replaced; `prefixes` (B, D, K): the cold items' prefix
        log-probabilities by length 0..D-1 (`path_scores(..., prefixes_of=self.items)`)."""
        share = prefixes.gather(1, self.depth.to(prefixes.device)[None, None].expand(len(prefixes), 1, -1))[:, 0]
        scores[:, self.items.to(scores.device)] = share - self.log_count.to(scores.device)
        return scores


@torch.no_grad()
def path_scores(model, batch: dict[str, Any], tree: CodeTree, precision: str = "fp32",
                prefixes_of: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """(B, N) float32: each item's log-probability under decoding constrained to real items.

    The prompt runs once with its KV cache kept; then, depth by depth, every fed prefix's last token runs in
    one pass (in chunks) whose attention mask lets it see the prompt and its own ancestors only, at the
    position it would have after the prompt. Equal, up to float error, to running prompt + prefix for every
    prefix (`reference_path_scores`), in a few passes instead of thousands.
    With `prefixes_of` (K,) item ids, also returns (B, D, K): those items' prefix log-probabilities by
    prefix length 0..D-1 (`ColdItems`).
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    lm = model.lang_encoder
    b, p = ids.shape
    device = ids.device
    scores = torch.zeros(b, tree.n_items, device=device)
    weight, bias = _output_head(lm)
    heads = [(weight[level.vocab.to(device)], None if bias is None else bias[level.vocab.to(device)])
             for level in tree.levels]
    n_heads = int(getattr(lm.config, "num_attention_heads", None) or getattr(lm.config, "n_heads", 1))
    boolean = getattr(lm.config, "_attn_implementation", "eager") == "sdpa"
    cached_media = lm._use_cached_vision_x
    prefixes = None if prefixes_of is None else torch.zeros(b, len(tree.levels), len(prefixes_of), device=device)
    if prefixes_of is not None:
        prefixes_of = prefixes_of.to(device)
    with autocast(device, precision):
        encode_images(model, batch["vision_x"], batch.get("image_ids"))
        try:
            hidden, cache = _hidden_states(lm, input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                                           use_cache=True)
            _score_level(scores, hidden[:, -1:], tree.levels[0], 0, heads[0])
            lm._use_cached_vision_x = True  # the prefixes attend to the prompt's last image, as generate() does
            real = mask.bool()  # (B, P)
            last_pos = mask.long().sum(dim=1) - 1  # (B,) position of each prompt's last token
            seen, offsets = 0, [0]  # prefixes in the cache; where each depth's kept prefixes start among them
            for d, level in enumerate(tree.levels[1:], start=1):
                if prefixes is not None:
                    prefixes[:, d] = scores[:, prefixes_of]  # levels 0..d-1 scored: the length-d prefixes
                offsets.append(seen)
                fed = len(level.tokens)
                # kept prefixes stay in the cache (deeper ones attend to them); the others leave it after their
                # pass, so later chunks never pay attention to them; small chunks keep that cost down
                for first, last, keep in ((0, level.kept, True), (level.kept, fed, False)):
                    chunk = max(1, min(last - first, TREE_CHUNK_SCORES // max(1, b * n_heads * (p + seen + fed))))
                    if not keep:
                        chunk = min(chunk, TREE_CHUNK)
                    for start in range(first, last, chunk):
                        stop = min(last, start + chunk)
                        attend = _tree_mask(real, level, offsets, start, stop, seen, boolean)  # (B, 1, n, P + seen + n)
                        tokens = level.tokens[start:stop].to(device).expand(b, -1)  # (B, n)
                        hidden, cache = _hidden_states(lm, input_ids=tokens, attention_mask=attend,
                                                       position_ids=(last_pos + d)[:, None].expand(-1, stop - start),
                                                       past_key_values=cache, use_cache=True)
                        _score_level(scores, hidden, level, start, heads[d])
                        if keep:
                            seen += stop - start
                        else:
                            cache = _drop_last(cache, stop - start)
        finally:
            lm._use_cached_vision_x = cached_media
            lm.clear_conditioned_layers()
    return scores if prefixes is None else (scores, prefixes)


def _drop_last(cache, n: int):
    """The KV cache without its last `n` tokens (DynamicCache in place; legacy tuples sliced)."""
    if hasattr(cache, "crop"):
        cache.crop(-n)  # a negative length removes that many tokens (transformers 4.x and 5.x alike)
        return cache
    return tuple((k[..., :-n, :], v[..., :-n, :]) for k, v in cache)


def _output_head(lm) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LM head's weight (V, H) and bias; an LM without a head module computes logits with its input embeddings."""
    head = lm.get_output_embeddings()
    if head is None:
        return lm.get_input_embeddings().weight, None
    return head.weight, getattr(head, "bias", None)


def _hidden_states(lm, **kwargs) -> tuple[torch.Tensor, Any]:
    """(B, T, H) last hidden states (after the final norm: what the LM head reads) and the KV cache."""
    kwargs["output_hidden_states"] = True
    if getattr(lm, "_unimp_keeps_logits", True):
        try:
            out = lm(**kwargs, logits_to_keep=1)
            return out.hidden_states[-1], out.past_key_values
        except TypeError as exc:
            if "logits_to_keep" not in str(exc):
                raise
            lm._unimp_keeps_logits = False
    out = lm(**kwargs)
    return out.hidden_states[-1], out.past_key_values


def _tree_mask(real: torch.Tensor, level: TreeLevel, offsets: list[int], start: int, stop: int, seen: int,
               boolean: bool) -> torch.Tensor:
    """(B, 1, n, P + seen + n) attention mask of fed prefixes start..stop of `level`: each sees the prompt's
    real tokens, its ancestors' cached tokens and itself. Boolean (True: attend) for SDPA, else additive."""
    b, p = real.shape
    n = stop - start
    q = torch.arange(n)
    nodes = torch.zeros((n, seen + n), dtype=torch.bool)
    nodes[q, seen + q] = True
    for j in range(level.ancestors.shape[1]):  # the ancestor at depth j + 1
        nodes[q, offsets[j + 1] + level.ancestors[start:stop, j]] = True
    attend = torch.cat([real[:, None, None, :].expand(b, 1, n, p),
                        nodes.to(real.device)[None, None].expand(b, 1, n, seen + n)], dim=-1)
    if boolean:
        return attend
    return torch.zeros(attend.shape, device=real.device).masked_fill(~attend, torch.finfo(torch.float32).min)


def _score_level(scores: torch.Tensor, hidden: torch.Tensor, level: TreeLevel, start: int,
                 head: tuple[torch.Tensor, torch.Tensor | None]) -> None:
    """Add to `scores` (B, N) the log-probabilities of the next token of the scored prefixes among fed prefixes
    start.. (whose last hidden states are `hidden` (B, n, H)), over each prefix's continuations."""
    bounds = torch.tensor([start, start + hidden.shape[1]])
    s0, s1 = torch.searchsorted(level.scored, bounds).tolist()
    if s1 == s0:
        return
    device = scores.device
    weight, bias = head
    logits = hidden[:, (level.scored[s0:s1] - start).to(device)] @ weight.T  # (B, S', C)
    if bias is not None:
        logits = logits + bias
    logits = logits.float().masked_fill(~level.allowed[s0:s1].to(device), float("-inf"))
    logp = torch.log_softmax(logits, dim=-1).reshape(scores.shape[0], -1)  # (B, S' * C)
    c = len(level.vocab)
    i0, i1 = torch.searchsorted(level.flat, torch.tensor([s0 * c, s1 * c])).tolist()
    scores[:, level.items[i0:i1].to(device)] += logp[:, (level.flat[i0:i1] - s0 * c).to(device)]


@torch.no_grad()
def reference_path_scores(model, batch: dict[str, Any], tree: CodeTree, item_tokens: torch.Tensor, row: int,
                          items: Sequence[int], precision: str = "fp32") -> torch.Tensor:
    """(len(items),) the same scores as `path_scores` for prompt `row`, the plain way: prompt + each item's
    tokens in an ordinary forward pass, the LM's own logits at each of its positions."""
    ids, mask = batch["input_ids"][row:row + 1], batch["attention_mask"][row:row + 1]
    k, depth = len(items), item_tokens.shape[1]
    paths = item_tokens[list(items)].to(ids.device)  # (k, D)
    rows = {"input_ids": torch.cat([ids.expand(k, -1), paths[:, :-1]], dim=1),
            "attention_mask": torch.cat([mask.expand(k, -1), mask.new_ones(k, depth - 1)], dim=1),
            "vision_x": batch["vision_x"][row:row + 1].expand(k, *batch["vision_x"].shape[1:])}
    if batch.get("image_ids") is not None:
        rows["image_ids"] = batch["image_ids"][row:row + 1].expand(k, -1)
    logits = sequence_logits(model, rows, depth, precision)  # (k, D, V)
    out = torch.zeros(k)
    for d, level in enumerate(tree.levels):
        c = len(level.vocab)
        for r, item in enumerate(items):
            hit = (level.items == item).nonzero()
            if not len(hit):
                continue  # one continuation: log 1
            s, code = divmod(int(level.flat[hit[0, 0]]), c)
            choices = level.vocab[level.allowed[s]]
            logp = torch.log_softmax(logits[r, d, choices.to(logits.device)], dim=-1).cpu()
            out[r] += logp[(choices == level.vocab[code]).nonzero()[0, 0]]
    return out


def checked_path_scores(model, batch: dict[str, Any], tree: CodeTree, item_tokens: torch.Tensor,
                        precision: str = "fp32", cold: ColdItems | None = None) -> torch.Tensor:
    """`path_scores`, checked once per model against `reference_path_scores` (first prompt, first and last
    item): an LM whose attention ignores the tree mask (some remote code) fails in one line, never silently.
    With `cold`, the cold items' scores are their share of their trained prefix (`ColdItems`)."""
    lm = model.lang_encoder
    checked = getattr(lm, "_unimp_tree_checked", False)
    hint = "evaluate it with --decode beam"
    try:
        out = path_scores(model, batch, tree, precision, None if cold is None else cold.items)
    except (TypeError, ValueError, RuntimeError) as exc:
        if checked:
            raise
        raise UnimpError(f"model: {type(lm).__name__} cannot score semantic ids with a tree attention mask "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); {hint}") from exc
    scores = out if cold is None else out[0]
    if not checked:
        items = sorted({0, tree.n_items - 1})
        want = reference_path_scores(model, batch, tree, item_tokens, 0, items, precision)
        tol = 1e-3 if precision == "fp32" else 5e-2
        got = scores[0, items].cpu()
        if not torch.allclose(got, want, atol=tol, rtol=tol):
            raise UnimpError(f"model: {type(lm).__name__}'s semantic-id scores under a tree attention mask differ "
                             f"from a plain forward pass ({got.tolist()} vs {want.tolist()}); {hint}")
        lm._unimp_tree_checked = True
    return scores if cold is None else cold.apply(*out)


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
