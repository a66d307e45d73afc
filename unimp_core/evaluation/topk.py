"""The top-k of a (B, N) score matrix over the catalogue, whatever model family scored it."""

from __future__ import annotations

from typing import Sequence

import torch


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
