"""Batches of samples -> tensors for the Flamingo model.

    collate = make_collator(tokenizer, images=load_image, image_shape=(3, 224, 224), max_length=1024)
    loader = DataLoader(SampleDataset(samples), batch_size=4, collate_fn=collate)

Truncation drops tokens from the LEFT (the question and the answer are at the end) and drops the
images whose `<image>` token went with them, so every row keeps as many images as `<image>` tokens.
Rows are padded to the batch's largest image count with zero images placed after the row's real
ones: Flamingo's cross-attention lets a token see image k only when k equals the number of `<image>`
tokens before it (open_flamingo helpers.MaskedCrossAttention with its default
only_attend_immediate_media=True: text_time == media_time), so the padding images are never
attended. A batch without any image still gets one zero image per row.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Literal, Mapping, Sequence

import torch

from ..errors import UnimpError
from ..task_names import DEFAULT_TASK_WEIGHTS, task_names as known_tasks
from ..tasks.base import Sample
from ..model.vocab import SpecialIds, special_ids

IGNORE_INDEX = -100

# item_id -> one image as the model takes it: pixels (C, H, W), or precomputed vision features
# (e.g. (v, d) patch features for a run that caches the frozen vision tower's output).
ImageFn = Callable[[int], torch.Tensor]


def answer_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor, ids: SpecialIds) -> torch.Tensor:
    """(B, T) labels: the token id inside answer spans, IGNORE_INDEX elsewhere.

    A span is every token strictly after an `<answer>` up to and including the next
    `<|endofchunk|>` or eos (or the end of the row). Padding, `<image>` and `<answer>` tokens are
    never labels; in a span that holds item tokens only those and its closing token are (the text of
    items' content between them is read, not taught), and in a span naming several items the first item is
    read, not taught. The closing token is a label only in the row's last span: after the history's
    reconstructions it teaches nothing the final answer does not, and each label costs the output
    head over the whole vocabulary (half of that work in a rec prompt, where every history item is a
    one-token span). Computed with running maxima instead of a loop over tokens.
    """
    B, T = input_ids.shape
    real = attention_mask.bool()
    pos = torch.arange(T, device=input_ids.device).expand(B, T)
    opens = input_ids == ids.answer
    closes = (input_ids == ids.eoc) & real
    if ids.eos is not None and ids.eos != ids.pad:
        closes |= (input_ids == ids.eos) & real
    none = torch.full_like(pos, -1)
    last_open = torch.where(opens, pos, none).cummax(dim=1).values  # (B, T) latest <answer> at or before t
    last_close = torch.where(closes, pos, none).cummax(dim=1).values
    # Closes strictly before t: the closing token itself stays inside its span.
    prev_close = torch.cat([none[:, :1], last_close[:, :-1]], dim=1)
    opens_later = opens.flip(1).cummax(dim=1).values.flip(1)  # (B, T) an <answer> at or after t
    inside = (last_open > prev_close) & ~opens & real & (input_ids != ids.image) & ~(closes & opens_later)
    if ids.item_range is not None:
        # A span that names items (rec's sequence layout: items back to back, each with its content after it)
        # teaches the items and its end, never the content text read between them.
        lo, hi = ids.item_range
        is_item = (input_ids >= lo) & (input_ids < hi)
        span = opens.long().cumsum(dim=1)  # (B, T) index of the latest <answer>
        names_items = _span_max((is_item & inside).long(), span).bool()  # (B, T)
        inside &= ~names_items | is_item | closes
        if ids.item_starts is not None:
            # A span naming several items (rec's sequence layout) teaches from its second item on: the first is
            # predicted from `<answer>` alone, a position no ranking reads (a history holds at least one item),
            # as SASRec never predicts a sequence's first item; on Beauty it was a sixth of the softmax rows.
            lo, hi = ids.item_starts
            starts = ((input_ids >= lo) & (input_ids < hi) & inside).long().cumsum(dim=1)  # (B, T)
            nth = starts - starts.gather(1, last_open.clamp(min=0))  # (B, T) items begun in the span up to t
            inside &= ~((nth <= 1) & (_span_max(nth, span) >= 2))  # the span names two or more items
    return torch.where(inside, input_ids, torch.full_like(input_ids, IGNORE_INDEX))


def _span_max(values: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """(B, T) the largest of `values` (B, T) over each position's span (`span`: index of its latest `<answer>`)."""
    B, T = values.shape
    return values.new_zeros(B, T + 1).scatter_reduce(1, span, values, reduce="amax").gather(1, span)


def collate_samples(
    samples: Sequence[Sample],
    *,
    tokenizer: Any,
    ids: SpecialIds,
    max_length: int,
    padding_side: Literal["right", "left"] = "right",
    images: ImageFn | None = None,
    image_shape: tuple[int, ...] | None = None,
    task_weights: Mapping[str, float] = DEFAULT_TASK_WEIGHTS,
    task_names: Sequence[str] | None = None,
    add_bos: bool = True,
    keep_samples: bool = False,
) -> dict[str, Any]:
    """Tokenize, truncate (left), pad and label a batch.

    Returns a dict of tensors:
        input_ids (B, T), attention_mask (B, T), labels (B, T) (IGNORE_INDEX outside answer spans),
        weights (B,) float task weights, task_ids (B,) index into `task_names`,
        image_ids (B, T_img) item id per image slot, -1 for padding slots,
        media_mask (B, T_img) bool, True for real images,
        vision_x (B, T_img, 1, *image_shape) when `images` is given (zeros in padding slots),
        samples (the input list) when `keep_samples`.
    """
    if not samples:
        raise UnimpError("collate: empty batch")
    encoded = tokenizer([s.text for s in samples], add_special_tokens=False)["input_ids"]
    bos = [ids.bos] if add_bos and ids.bos is not None else []
    budget = max_length - len(bos)
    if budget < 1:
        raise UnimpError(f"max_length {max_length} leaves no room for text")

    rows: list[list[int]] = []
    kept_images: list[list[int]] = []
    for sample, row in zip(samples, encoded):
        n_markers = row.count(ids.image)
        if n_markers != len(sample.image_items):
            raise UnimpError(
                f"{sample.task} sample {sample.meta}: {n_markers} <image> tokens for {len(sample.image_items)} images"
            )
        row = row[-budget:]  # keep the end: the question and the answer
        n_kept = row.count(ids.image)
        kept_images.append(sample.image_items[len(sample.image_items) - n_kept:])
        rows.append(bos + row)

    B, T = len(rows), max(len(r) for r in rows)
    input_ids = torch.full((B, T), ids.pad, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    for b, row in enumerate(rows):
        span = slice(T - len(row), T) if padding_side == "left" else slice(0, len(row))
        input_ids[b, span] = torch.tensor(row, dtype=torch.long)
        attention_mask[b, span] = 1

    T_img = max(1, max(len(k) for k in kept_images))
    image_ids = torch.full((B, T_img), -1, dtype=torch.long)
    for b, items in enumerate(kept_images):
        image_ids[b, : len(items)] = torch.tensor(items, dtype=torch.long)

    task_names = task_names or known_tasks()
    try:
        task_ids = torch.tensor([task_names.index(s.task) for s in samples], dtype=torch.long)
        weights = torch.tensor([float(task_weights.get(s.task, 1.0)) for s in samples], dtype=torch.float32)
    except ValueError:
        unknown = sorted({s.task for s in samples} - set(task_names))
        raise UnimpError(f"collate: unknown task(s) {unknown} (known: {list(task_names)})") from None

    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": answer_labels(input_ids, attention_mask, ids),
        "weights": weights,
        "task_ids": task_ids,
        "image_ids": image_ids,
        "media_mask": image_ids >= 0,
    }
    if images is not None:
        batch["vision_x"] = stack_images(kept_images, T_img, images, image_shape)
    if keep_samples:
        batch["samples"] = list(samples)
    return batch


def stack_images(kept: list[list[int]], T_img: int, images: ImageFn,
                 image_shape: tuple[int, ...] | None) -> torch.Tensor:
    """(B, T_img, 1, *image_shape): each row's images first, zeros after (the frame axis F is 1)."""
    loaded = [[images(i) for i in row] for row in kept]
    first = next((t for row in loaded for t in row), None)
    shape = tuple(image_shape) if image_shape is not None else (tuple(first.shape) if first is not None else None)
    if shape is None:
        raise UnimpError("collate: image_shape is needed for a batch without images")
    dtype = first.dtype if first is not None else torch.float32
    out = torch.zeros((len(kept), T_img, 1, *shape), dtype=dtype)
    for b, row in enumerate(loaded):
        for t, img in enumerate(row):
            if tuple(img.shape) != shape:
                raise UnimpError(f"collate: image of item {kept[b][t]} has shape {tuple(img.shape)}, expected {shape}")
            out[b, t, 0] = img
    return out


def make_collator(
    tokenizer: Any,
    *,
    max_length: int = 1024,
    padding_side: Literal["right", "left"] = "right",
    images: ImageFn | None = None,
    image_shape: tuple[int, ...] | None = None,
    task_weights: Mapping[str, float] | None = None,
    task_names: Sequence[str] | None = None,
    add_bos: bool = True,
    keep_samples: bool = False,
) -> Callable[[Sequence[Sample]], dict[str, Any]]:
    """`collate_samples` with its settings bound once (picklable for DataLoader workers).

    Use padding_side="right" for training and validation loss, "left" for generation.
    """
    if padding_side not in ("right", "left"):
        raise UnimpError(f"padding_side must be 'right' or 'left' (got {padding_side!r})")
    weights = dict(DEFAULT_TASK_WEIGHTS)
    weights.update(task_weights or {})
    return partial(
        collate_samples, tokenizer=tokenizer, ids=special_ids(tokenizer), max_length=max_length,
        padding_side=padding_side, images=images, image_shape=image_shape, task_weights=weights,
        task_names=tuple(task_names or known_tasks()), add_bos=add_bos, keep_samples=keep_samples,
    )
