"""Semantic item ids: the exact code-path score of every catalogue item (see `decode`'s docstring):
the prompt once with its KV cache kept, then each depth of the code tree in one pass with a tree
attention mask; cold items get an equal share of their longest trained prefix's probability."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ...errors import UnimpError
from .decode import autocast, encode_images, position_ids, sequence_logits


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
