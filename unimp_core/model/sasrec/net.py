"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018): the yardstick.

A causal Transformer over a user's item ids: item embeddings (scaled by sqrt(d)) plus learned
positions, `blocks` pre-LN blocks of self-attention and a point-wise feed-forward network, a final
layer norm; the state at position t scores every catalogue item by a dot product with the (shared)
item embeddings and predicts item t+1. Training uses every position of every training sequence.

Input ids: 0 is padding, catalogue item i is input id i + 1. Sequences are left-padded, so the last
column is each row's most recent item. Positions count from the first real item of the window
(1, 2, ...; 0 on padding), so the state at t depends on items 0..t only: nothing after t, not even
how many items follow, reaches it (tests/model/test_sasrec.py checks this).

Departures from the paper, each measured or standard: layer norm before attention and feed-forward
on queries, keys and values alike (pre-LN, as pmixer/SASRec.pytorch's `norm_first`, which its authors
measured above the original on Beauty); padded keys are masked out of attention instead of being zero vectors. Negatives
for the BCE loss are drawn uniformly from the items not in the row's window (the paper: not in the
user's training sequence; identical for sequences within `max_len + 1` items).

Pure torch: no dataset or run-folder code here (the family glue lives in `model.sasrec.family`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..packing import first_fit

PAD = 0
LOSSES = ("bce", "ce")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention under a (B, L, L) mask of allowed (query, key) pairs."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, dh)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None],
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, L, dh)
        return self.out(y.transpose(1, 2).reshape(b, length, d))


class Block(nn.Module):
    """x + attention(LN(x)), then x + FFN(LN(x)); the FFN is the paper's two d x d layers with ReLU."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.attn = CausalSelfAttention(hidden, heads, dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.ffn = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), allowed)
        return x + self.ffn(self.ffn_norm(x))


class SASRec(nn.Module):
    """SASRec over a catalogue of `n_items` items (ids 0..n_items-1; input ids shifted by one)."""

    def __init__(self, n_items: int, hidden: int = 64, blocks: int = 2, heads: int = 1, max_len: int = 50,
                 dropout: float = 0.5):
        super().__init__()
        self.n_items, self.hidden, self.max_len = n_items, hidden, max_len
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=PAD)
        self.pos_emb = nn.Embedding(max_len + 1, hidden, padding_idx=0)
        self.emb_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(blocks))
        self.final_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal matrices (embeddings included), zero biases, unit layer norms, zero padding rows.

        The scale matters: nn.Embedding's N(0, 1) times sqrt(d) leaves the model stuck at popularity on
        Amazon Beauty for many epochs, xavier (std ~0.013 for 12k items) does not.
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.xavier_normal_(module.weight)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()
            self.pos_emb.weight[0].zero_()

    def forward(self, seqs: torch.Tensor, segments: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) left-padded input ids (L <= max_len) -> (B, L, d) states; state t predicts item t+1.

        `segments` (B, L): several users packed into one row (see `pack`), each a contiguous run of
        one segment id; a user's items see only their own segment and count positions from its start.
        """
        if seqs.shape[1] > self.max_len:
            raise ValueError(f"sequences of {seqs.shape[1]} items, the model takes at most {self.max_len}")
        real = seqs != PAD  # (B, L)
        length = seqs.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).tril()  # (L, L)
        counts = real.long().cumsum(dim=1)  # (B, L)
        if segments is None:
            same = real[:, None, :]  # (B, 1, L): every real key
            positions = counts * real  # (B, L): 1.. from the first real item, 0 on padding
        else:
            same = (segments[:, :, None] == segments[:, None, :]) & real[:, None, :]  # (B, L, L)
            # the count of real items before the segment's first one, carried along the segment
            start = torch.where(real & (segments != F.pad(segments, (1, 0))[:, :-1]), counts - 1, 0)
            positions = (counts - start.cummax(dim=1).values) * real
        x = self.item_emb(seqs) * math.sqrt(self.hidden) + self.pos_emb(positions)  # (B, L, d)
        x = self.emb_dropout(x) * real[..., None]
        # a query sees earlier real items (of its segment) and itself, so a padding row is never empty (no NaN)
        allowed = causal & (same | torch.eye(length, dtype=torch.bool, device=seqs.device))  # (B, L, L)
        for block in self.blocks:
            x = block(x, allowed) * real[..., None]
        return self.final_norm(x)

    def item_scores(self, states: torch.Tensor) -> torch.Tensor:
        """(..., d) states -> (..., n_items) scores of catalogue items 0..n_items-1."""
        return states @ self.item_emb.weight[1:].T

    def last_scores(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded histories (each of at least one item) -> (B, n_items) next-item scores."""
        packed, segments, last = pack(seqs)
        if bool((last < 0).any()):
            raise ValueError("SASRec cannot score a user without history items")
        states = self(packed, segments).reshape(-1, self.hidden)  # (R * L, d)
        return self.item_scores(states[last])


def trim(seqs: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop the leading columns that are padding in every row (of `seqs`, and the same of `others`).

    Positions count from each row's (segment's) first item, so the states are the same.
    """
    used = (seqs != PAD).any(dim=0).nonzero()
    start = int(used[0]) if used.numel() else seqs.shape[1] - 1
    return tuple(t[:, start:] for t in (seqs, *others))


# ------------------------------------------------------------------------------------------- data


def history_batch(histories: Sequence[Sequence[int]], max_len: int) -> torch.Tensor:
    """Item-id histories (catalogue ids, oldest first) -> (B, max_len) left-padded input ids.

    Only the last `max_len` items of a history are kept (the model's window)."""
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for row, items in enumerate(histories):
        items = np.asarray(items, dtype=np.int64)[-max_len:]
        if items.size:
            out[row, max_len - items.size:] = items + 1
    return torch.from_numpy(out)


def training_windows(sequences: Sequence[Sequence[int]], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every position of each training sequence, as the paper trains: inputs and next-item targets.

    Args:
        sequences: each user's training items (catalogue ids, oldest first); those under 2 items are skipped.
    Returns:
        (U, max_len) inputs and (U, max_len) targets, left-padded input ids (0 = no target there):
        the last max_len + 1 items s give inputs s[:-1] and targets s[1:].
    """
    kept = [np.asarray(s, dtype=np.int64)[-(max_len + 1):] + 1 for s in sequences if len(s) >= 2]
    inputs = np.zeros((len(kept), max_len), dtype=np.int64)
    targets = np.zeros((len(kept), max_len), dtype=np.int64)
    for row, s in enumerate(kept):
        n = s.size - 1
        inputs[row, max_len - n:] = s[:-1]
        targets[row, max_len - n:] = s[1:]
    return inputs, targets


def sample_negatives(inputs: torch.Tensor, targets: torch.Tensor, n_items: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, L) negative input ids: uniform over the catalogue, never an item of the row's window."""
    b = inputs.shape[0]
    seen = torch.zeros(b, n_items + 1, dtype=torch.bool)  # (B, N + 1)
    seen.scatter_(1, inputs, True)
    seen.scatter_(1, targets, True)
    seen[:, PAD] = True
    negatives = torch.randint(1, n_items + 1, targets.shape, generator=generator)
    while True:
        clash = seen.gather(1, negatives)  # (B, L)
        n = int(clash.sum())
        if n == 0 or bool(seen.all(dim=1).any()):
            return negatives
        negatives[clash] = torch.randint(1, n_items + 1, (n,), generator=generator)


def bce_loss(model: SASRec, states: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """The paper's loss: -log sigmoid(positive) - log(1 - sigmoid(negative)), averaged over real positions."""
    mask = targets != PAD  # (B, L)
    h = states[mask]  # (P, d)
    pos = (h * model.item_emb(targets[mask])).sum(-1)  # (P,)
    neg = (h * model.item_emb(negatives[mask])).sum(-1)  # (P,)
    return F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + \
        F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))


def ce_loss(model: SASRec, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the whole catalogue (softmax of every item's score), averaged over real positions."""
    mask = targets != PAD
    logits = model.item_scores(states[mask])  # (P, N)
    return F.cross_entropy(logits, targets[mask] - 1)


def pack(*rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Pack left-padded per-user rows (B, L) into fewer rows of the same width, users side by side
    (`model.packing.first_fit`).

    Beauty's training windows average 6 items in a width of 50; packing (first-fit by decreasing
    length) cuts the work about fivefold and changes nothing: `SASRec.forward(inputs, segments)`
    keeps users apart. Returns the packed versions of `rows` (aligned with the first one), then
    (R, L) segment ids (1.. per user, 0 on padding), then (B,) the flat index (row * L + column) of
    each user's last item in the packed rows (-1 for a user without items).
    """
    first = rows[0]
    width = first.shape[1]
    lengths = (first != PAD).sum(dim=1).tolist()
    place, n_rows = first_fit(lengths, width)  # (packed row, room used before the user) per user
    out = [torch.zeros(n_rows, width, dtype=t.dtype) for t in rows]
    segments = torch.zeros(n_rows, width, dtype=torch.long)
    last = torch.full((len(lengths),), -1, dtype=torch.long)
    placed = sorted((u for u, n in enumerate(lengths) if n), key=lambda u: -lengths[u])  # first_fit's order
    for segment, user in enumerate(placed, start=1):
        (row, used), n = place[user], lengths[user]
        end = width - used  # each row fills from the right, as left padding does
        for src, dst in zip(rows, out):
            dst[row, end - n:end] = src[user, width - n:]
        segments[row, end - n:end] = segment
        last[user] = row * width + end - 1
    return (*out, segments, last)


def loss(model: SASRec, inputs: torch.Tensor, targets: torch.Tensor, kind: str,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """One batch's training loss (`kind`: "bce" with one sampled negative per position, or "ce").

    Args:
        inputs, targets: (B, L) per-user windows as `training_windows` makes them.
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown SASRec loss {kind!r} (choose from {', '.join(LOSSES)})")
    if kind == "bce":
        negatives = sample_negatives(inputs, targets, model.n_items, generator)  # per user, before packing
        inputs, targets, negatives, segments, _ = pack(inputs, targets, negatives)
        inputs, targets, negatives, segments = trim(inputs, targets, negatives, segments)
        return bce_loss(model, model(inputs, segments), targets, negatives)
    inputs, targets, segments, _ = pack(inputs, targets)
    inputs, targets, segments = trim(inputs, targets, segments)
    return ce_loss(model, model(inputs, segments), targets)
