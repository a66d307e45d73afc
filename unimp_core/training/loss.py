"""The training objective: focal, task-weighted next-token cross-entropy on answer spans only.

For each answer token t of sample b (labels from the collator, shifted by one so position t-1
predicts token t):

    loss = sum_{b,t} w_b * (1 - p_t)^gamma * (-log p_t) / N

with p_t the model's probability of the label, w_b the sample's task weight and N the number of
answer tokens (unweighted, as the paper's code). gamma = 0 is plain cross-entropy.

With `item_range`, p_t of an item label is a softmax over the item tokens alone (the catalogue, as
SASRec scores it), not over the whole vocabulary: text tokens never compete with items for an answer
that can only be an item, and ranking (item logits) is unchanged by it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..errors import UnimpError
from .collate import IGNORE_INDEX


class SplitLogits(NamedTuple):
    """The head's output at the label positions (`label_positions` order) when an item label's softmax runs
    over the item tokens alone: those rows are computed over the item tokens only, never over the rest of
    the vocabulary (a model's head can skip that work and the (N, V) masking)."""

    items: torch.Tensor  # (N_item, hi - lo) the rows whose label is an item token, over the item tokens lo..hi-1
    others: torch.Tensor  # (N - N_item, V) the other rows, over the whole vocabulary
    by_content: torch.Tensor | None = None  # (N_item, hi - lo) the item rows scored by content alone (training)
    content_weight: float = 0.0  # of by_content's softmax in each item label's loss (model.attribute_loss)


class LossParts(NamedTuple):
    loss: torch.Tensor  # () the objective
    sample_sums: torch.Tensor  # (B,) detached weighted focal CE summed over each sample's answer tokens
    sample_tokens: torch.Tensor  # (B,) answer tokens per sample


def answer_loss_parts(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    gamma: float = 0.0,
    normalizer: float | torch.Tensor | None = None,
    item_range: tuple[int, int] | None = None,
) -> LossParts:
    """The loss and its per-sample pieces (for per-task logging).

    logits (B, T, V), or (N, V): the logits of the label positions only, in `label_positions(labels)`
    order (what a model computing its head there alone returns), or those split by `item_rows`
    (`SplitLogits`, with `item_range`); labels (B, T) with IGNORE_INDEX
    outside answers, weights (B,) (default 1).
    `normalizer` replaces the token count N (e.g. the count over all accumulation micro-batches).
    `item_range` [lo, hi): the item tokens; an item label's softmax runs over them alone.
    """
    B = labels.shape[0]
    shift_labels = labels[:, 1:]  # (B, T-1) token predicted at each position
    mask = shift_labels != IGNORE_INDEX
    # Only answer positions reach the softmax: a few tokens instead of (B, T, V) in float32.
    targets = shift_labels[mask]  # (N,)
    if isinstance(logits, SplitLogits):
        logp = _split_log_probs(logits, targets, item_range)
    else:
        picked = (logits if logits.ndim == 2 else logits[:, :-1][mask]).float()  # (N, V)
        if item_range is None:
            logp = -F.cross_entropy(picked, targets, reduction="none")  # (N,)
        else:  # the same split the head can compute directly
            rows, (lo, hi) = item_rows(targets, item_range), item_range
            logp = _split_log_probs(SplitLogits(picked[rows, lo:hi], picked[~rows]), targets, item_range)
    token_loss = -logp
    if gamma:
        token_loss = token_loss * (1.0 - logp.exp()).pow(gamma)
    if isinstance(logits, SplitLogits) and logits.by_content is not None:
        token_loss = token_loss + _content_loss(logits, targets, item_range)  # a second softmax beside the first
    if weights is not None:
        rows = mask.nonzero()[:, 0]  # (N,) sample of each answer token
        token_loss = token_loss * weights.to(token_loss.dtype)[rows]
    n_tokens = mask.sum(dim=1)  # (B,)
    denom = mask.sum().clamp(min=1) if normalizer is None else normalizer
    loss = token_loss.sum() / denom
    if not len(targets):
        # The empty slice adds 0 but keeps the graph (and every rank's gradients) alive for a batch
        # without answer tokens, e.g. when truncation removed them all (0 * logits.sum() would turn
        # an overflowed logit into NaN). Only then: its backward is a zero-filled copy of the logits.
        parts = [p for p in logits if isinstance(p, torch.Tensor)] if isinstance(logits, SplitLogits) else [logits]
        loss = loss + sum(part[..., :0].sum() for part in parts)
    sample_sums = torch.zeros(B, dtype=torch.float32, device=labels.device)
    sample_sums.index_add_(0, mask.nonzero()[:, 0], token_loss.detach().float())
    return LossParts(loss, sample_sums, n_tokens)


def _split_log_probs(logits: SplitLogits, targets: torch.Tensor, item_range: tuple[int, int] | None) -> torch.Tensor:
    """(N,) log p of each label from the split head: the item rows' softmax over the item tokens."""
    if item_range is None:
        raise UnimpError("split logits need the item token range they were computed over")
    lo = item_range[0]
    is_item = item_rows(targets, item_range)  # (N,)
    logp = torch.empty(targets.shape, dtype=torch.float32, device=targets.device)
    logp[is_item] = -F.cross_entropy(logits.items.float(), targets[is_item] - lo, reduction="none")
    logp[~is_item] = -F.cross_entropy(logits.others.float(), targets[~is_item], reduction="none")
    return logp


def _content_loss(logits: SplitLogits, targets: torch.Tensor, item_range: tuple[int, int]) -> torch.Tensor:
    """(N,) the weighted cross-entropy of the item labels under the content-alone scores (0 elsewhere)."""
    is_item = item_rows(targets, item_range)
    loss = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
    loss[is_item] = logits.content_weight * F.cross_entropy(logits.by_content.float(), targets[is_item] - item_range[0],
                                                            reduction="none")
    return loss


def item_rows(targets: torch.Tensor, item_range: tuple[int, int]) -> torch.Tensor:
    """(N,) bool: the labels that are item tokens (their softmax runs over the item tokens alone)."""
    lo, hi = item_range
    return (targets >= lo) & (targets < hi)


def label_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the positions whose logits the loss reads (those followed by a label token)."""
    at = torch.zeros_like(labels, dtype=torch.bool)
    at[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return at


def per_task(sample_sums: torch.Tensor, sample_tokens: torch.Tensor, task_ids: torch.Tensor,
             n_tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_tasks,) summed loss and (n_tasks,) answer-token counts: sum / count is a task's mean token loss."""
    sums = torch.zeros(n_tasks, dtype=torch.float32, device=sample_sums.device).index_add_(0, task_ids, sample_sums)
    counts = torch.zeros(n_tasks, dtype=torch.long, device=sample_sums.device).index_add_(0, task_ids, sample_tokens)
    return sums, counts


def check_finite_loss(loss: float, step: int, lr: float) -> None:
    """Stop a run whose loss became NaN or infinite, before a checkpoint or a metrics line keeps it:
    nothing trains on NaN, and the message names the setting that usually causes it."""
    if not math.isfinite(loss):
        raise UnimpError(f"step {step}: the training loss is {loss} (not a finite number); stopped before saving. "
                         f"Lower --lr (now {lr:g}) or --task-weight and start again, or resume from the last checkpoint")
