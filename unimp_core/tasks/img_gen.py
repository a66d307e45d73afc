"""User-guided image generation: spell the image codes of the item the user wants, given a query.

As the paper's code: the recent history (2 items by default) shows each item with its image codes,
`<image> Title … ID img_3 img_17 … <|endofchunk|>`, then `Query: <target's category, or its title
keywords> What is the generated image ID to the query based on the history? <answer> <target's codes>`.
A VQ decoder turns the codes back into pixels (unimp_core.imagegen). History items without codes
are left out (their pictures would come without the IDs the model learns to spell), and only
targets with codes are drawn. Evaluation reads the stored rec instances (target = the rec target).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .base import Request, Sample, Task, TaskContext, assemble, clean, join, lazy, pick_target
from ..tokens import EOC, IMAGE, image_code_token

NAME = "img_gen"
QUESTION = "What is the generated image ID to the query based on the history?"
HISTORY_LEN = 2  # the paper's code's history length for this task
QUERY_WORDS = 8  # title keywords used as the query when the target has no category


def codes_text(codes: list[int]) -> str:
    """`img_3 img_17 …`: one token per code."""
    return " ".join(image_code_token(int(c)) for c in codes)


def query_of(ctx: TaskContext, item: int) -> str:
    """The target's category, else the first words of its title ("" when it has neither)."""
    if ctx.item_category[item]:
        return ctx.item_category[item]
    return clean(ctx.item_title[item] if ctx.item_title else "", QUERY_WORDS)


def history_text(ctx: TaskContext, items: np.ndarray | list[int]) -> tuple[str, list[int]]:
    """Each history item that has codes: `<image> Title … ID <codes> <|endofchunk|>`."""
    chunks, images = [], []
    for item in (int(i) for i in items):
        codes = ctx.image_codes.get(item)
        if not codes:
            continue
        title = ctx.item_title[item] if ctx.item_title else ""
        image = IMAGE if ctx.has_image[item] else ""
        chunks.append(join(image, f"Title {title}" if title else "", f"ID {codes_text(codes)}", EOC))
        images += ctx.image_of(item)
    return " ".join(chunks), images


def make_sample(ctx: TaskContext, user_id: int, seq: np.ndarray, position: int, query: str, history_len: int,
                train: bool, meta: dict | None = None, target_codes: list[int] | None = None) -> Sample:
    """The prompt for spelling the codes of `seq[position]` (or `target_codes`, e.g. unknown: [])."""
    target = int(seq[position])
    codes = list(ctx.image_codes.get(target, [])) if target_codes is None else list(target_codes)
    history = history_text(ctx, seq[max(0, position - history_len):position])
    meta = {"user_id": user_id, "position": position, "target": target, "query": query, "codes": codes,
            **(meta or {})}
    return assemble(NAME, [history, (f"Query: {query} {QUESTION}", [])], codes_text(codes), train, meta)


def training(ctx: TaskContext, rng: np.random.Generator, history_len: int) -> list[Sample]:
    out = []
    if not ctx.image_codes:
        return out
    has_codes = ctx.has_codes
    for user_id, length in ctx.train_lengths.items():
        seq = ctx.sequences[user_id]
        position = pick_target(rng, length, history_len, valid=has_codes[seq])
        if position is not None:
            target = int(seq[position])
            out.append(make_sample(ctx, user_id, seq, position, query_of(ctx, target), history_len, train=True))
    return out


def evaluation(ctx: TaskContext, instances: pl.DataFrame, history_len: int) -> list[Sample]:
    out = []
    for user_id, split, position in instances.select("user_id", "split", "position").iter_rows():
        seq = ctx.sequence(user_id)
        target = int(seq[position])
        if not ctx.image_codes.get(target):
            continue
        out.append(make_sample(ctx, user_id, seq, position, query_of(ctx, target), history_len, train=False,
                               meta={"split": split}))
    return out


def configure(spec, ds):
    """`spec` with the model's img_<k> tokens sized from the dataset's codebook (never from a hand-set value)."""
    from ..imagegen.codes import codebook_size

    model = spec.model.model_copy(update={"image_gen_codes": codebook_size(ds, spec.model.image_gen_codes)})
    return spec.model_copy(update={"model": model})


def prompt(ctx: TaskContext, user_id: int, seq: np.ndarray, history_len: int, request: Request) -> Sample:
    """An image for `request.query` after `seq` (no target codes: the answer is what is generated)."""
    return make_sample(ctx, user_id, np.append(seq, 0), len(seq), request.query or "", history_len, train=False,
                       target_codes=[])


TASK = Task(NAME, training, evaluation, endpoint="image", history_len=HISTORY_LEN, instances="rec", data_needs=("images",), prompt=prompt,
            needs=("query",), accepts=("out",), configure=configure, check=lazy("unimp_core.evaluation.scoring:check_image_tokenizer"),
            records=lazy("unimp_core.evaluation.scoring:image_records"), summary=lazy("unimp_core.evaluation.scoring:image_summary"), report=lazy("unimp_core.terminal:image_report"),
            answer=lazy("unimp_core.generation:image_answer"), show=lazy("unimp_core.terminal:show_image"), html=lazy("unimp_core.generation:image_html"),
            example=lazy("unimp_core.report.page:image_example"))
