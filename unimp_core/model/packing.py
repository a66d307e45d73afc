"""Sequence packing: a batch's short rows side by side in fewer rows of the same width.

A batch is padded to its longest row; with users' histories of very different lengths (Beauty's
average 9 items against a longest of 50) most of a padded batch is padding, and a transformer's work
grows with the padded size. Packing places the rows first-fit (longest first) into as few rows as
fit, and keeps them apart inside a packed row: every row's positions restart at 0, and the attention
stays within a row (for transformers' LMs: `position_ids` that restart and no attention mask, their
packed-sequence format). The numbers are those of the padded batch; only the work shrinks.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def first_fit(lengths: list[int], width: int) -> tuple[list[tuple[int, int]], int]:
    """Where each row goes: (packed row, offset) per input row (longest placed first, each in the
    first packed row with room; an empty row gets (-1, 0)), and the number of packed rows."""
    room: list[int] = []  # room left in each packed row
    place = [(-1, 0)] * len(lengths)
    for row in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
        n = lengths[row]
        if n == 0:
            continue
        if n > width:
            raise ValueError(f"row {row} has {n} tokens, more than the packed width {width}")
        target = next((r for r, free in enumerate(room) if free >= n), None)
        if target is None:
            room.append(width)
            target = len(room) - 1
        place[row] = (target, width - room[target])
        room[target] -= n
    return place, len(room)


class PackedRows(NamedTuple):
    input_ids: torch.Tensor  # (R, T) the rows side by side, `pad` after them
    position_ids: torch.Tensor  # (R, T) each row's own positions 0..n-1; the padding after them counts on from 0
    index: torch.Tensor  # (B, T) flat position (row * T + column) of each input token in the packed rows, -1 on padding


def pack_right_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad: int) -> PackedRows:
    """Pack a right-padded batch (B, T) (attention_mask 1 on real tokens, a prefix of each row) into (R, T), R <= B."""
    B, T = input_ids.shape
    lengths = attention_mask.sum(dim=1).tolist()
    place, R = first_fit(lengths, T)
    packed = torch.full((max(R, 1), T), pad, dtype=input_ids.dtype, device=input_ids.device)
    positions = torch.zeros((max(R, 1), T), dtype=torch.long, device=input_ids.device)
    index = torch.full((B, T), -1, dtype=torch.long, device=input_ids.device)
    used = [0] * max(R, 1)
    columns = torch.arange(T, device=input_ids.device)
    for b, ((row, offset), n) in enumerate(zip(place, lengths)):
        if row < 0:
            continue
        packed[row, offset:offset + n] = input_ids[b, :n]
        positions[row, offset:offset + n] = columns[:n]
        index[b, :n] = row * T + offset + columns[:n]
        used[row] = max(used[row], offset + n)
    for row, end in enumerate(used):  # the padding after a row's last segment is a segment of its own
        positions[row, end:] = columns[:T - end]
    return PackedRows(packed, positions, index)
