"""What every task shares: the sample type, the prompt vocabulary and the per-dataset context.

A prompt is plain text with one `<image>` marker per entry of `Sample.image_items`, in order. Each
history item reads `<image> Category … Price … Brand … Title …` followed by
`<answer> item_<i><|endofchunk|>` (the paper's context reconstruction: the model learns to name each
item it sees).
Items are named through `TaskContext.item_name`: `item_<i>` (atomic ids) or the item's code tuple
`<a_12><b_7><c_201><d_0>` (semantic ids, `--item-ids semantic`).
Training prompts end with the task's answer and `<|endofchunk|>`; evaluation prompts end right
after `<answer>`, the answer text is kept in `Sample.answer`.

Evaluation prompts keep the `<answer> item_<i><|endofchunk|>` reconstruction in the history, so the
model sees at test time exactly the layout it was trained on.
"""

from __future__ import annotations

import importlib
import math
import zlib
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np
import polars as pl

from ..data.store import Dataset, protocol_of, training_lengths
from ..errors import UnimpError
from ..task_names import RecPrompt
from ..tokens import ANSWER, EOC, IMAGE, MARKERS_RE, answer_span, item_token, semantic_item

if TYPE_CHECKING:
    from ..itemcodes.codes import ItemCodes

FIELD_WORDS = 20  # the paper's code caps each item field at 20 words
EXPLANATION_WORDS = 30  # and training explanations at 30



def clean(text: str | None, max_words: int | None = None) -> str:
    """One line of free text: markers removed, whitespace collapsed, at most `max_words` words."""
    if not text:
        return ""
    words = MARKERS_RE.sub(" ", text).split()
    return " ".join(words if max_words is None else words[:max_words])


@dataclass
class Sample:
    """One prompt. `text` holds one `<image>` per entry of `image_items`, in the same order.

    `answer` is the target text of an evaluation sample (None in training, where the answer is
    already inside `text`); `meta` holds what scoring needs (user, target, candidates, ...).
    """

    task: str
    text: str
    image_items: list[int]
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def with_answer(self) -> "Sample":
        """The evaluation sample completed with its answer, as training would see it (validation loss)."""
        if self.answer is None:
            return self
        return replace(self, text=f"{self.text} {answer_span(self.answer)}", answer=None)


@dataclass
class TaskContext:
    """Everything the tasks read from a dataset, indexed once.

    Sequences are full histories in time order; `train_lengths` says how much of each training
    user's history training may see (the whole of it under user-split, all but the last two items
    under leave-one-out).
    """

    item_desc: list[str]  # item_id -> "Category … Price … Brand … Title …" (may be "")
    item_category: list[str]  # item_id -> cleaned category ("" when missing)
    has_image: np.ndarray  # (n_items,) bool
    sequences: dict[int, np.ndarray]  # user_id -> item ids in time order
    ratings: dict[int, list[float | None]]  # user_id -> rating per interaction
    explanations: dict[int, list[str]]  # user_id -> cleaned explanation per interaction ("" when missing)
    train_lengths: dict[int, int]  # training user_id -> usable prefix length
    protocol: str
    item_title: list[str] = field(default_factory=list)  # item_id -> cleaned title ("" when missing)
    # item_id -> its image codes (`unimp tokenize-images`); empty when the dataset has none
    image_codes: dict[int, list[int]] = field(default_factory=dict)
    # semantic item ids: every item's code tuple (a run's, `unimp_core.model.item_ids`); None: atomic ids
    item_codes: "ItemCodes | None" = None
    # how rec prompts lay out the history (the run's model.rec_prompt; see tasks/rec.py)
    rec_prompt: RecPrompt = "chunks"
    # whether prompts write an item's description after it (the run's model.describe_items)
    describe_items: bool = True

    @property
    def n_items(self) -> int:
        return len(self.item_desc)

    @cached_property
    def has_category(self) -> np.ndarray:
        """(n_items,) bool: the item has a category (search needs one as its query)."""
        return np.fromiter((bool(c) for c in self.item_category), dtype=bool, count=len(self.item_category))

    @cached_property
    def has_codes(self) -> np.ndarray:
        """(n_items,) bool: the item's image was encoded into codes (img_gen needs them)."""
        out = np.zeros(self.n_items, dtype=bool)
        out[[i for i in self.image_codes if 0 <= i < self.n_items]] = True
        return out

    @classmethod
    def from_dataset(cls, ds: Dataset) -> "TaskContext":
        items = ds.items.sort("item_id")
        n = int(items["item_id"].max()) + 1 if items.height else 0
        desc = [""] * n
        category = [""] * n
        title = [""] * n
        has_image = np.zeros(n, dtype=bool)
        for row in items.select("item_id", "category", "price", "brand", "title", "image").iter_rows(named=True):
            i = row["item_id"]
            desc[i] = describe_item(row)
            category[i] = clean(row["category"], FIELD_WORDS)
            title[i] = clean(row["title"], FIELD_WORDS)
            has_image[i] = bool(row["image"])
        seqs = ds.interactions.group_by("user_id", maintain_order=True).agg(
            pl.col("item_id"), pl.col("rating"), pl.col("explanation")
        )
        user_items = {u: np.asarray(s, dtype=np.int64) for u, s in zip(seqs["user_id"], seqs["item_id"].to_list())}
        return cls(
            item_desc=desc,
            item_category=category,
            has_image=has_image,
            sequences=user_items,
            ratings=dict(zip(seqs["user_id"].to_list(), seqs["rating"].to_list())),
            explanations={u: [clean(e) for e in es] for u, es in zip(seqs["user_id"], seqs["explanation"].to_list())},
            train_lengths={u: length for u, length in training_lengths(ds).items() if length >= 2},
            protocol=protocol_of(ds),
            item_title=title,
            image_codes=image_codes_of(ds, n),
        )

    def sequence(self, user_id: int) -> np.ndarray:
        try:
            return self.sequences[user_id]
        except KeyError:
            raise UnimpError(f"eval instance: user_id {user_id} has no interactions in this dataset") from None

    def with_item_codes(self, codes: "ItemCodes | None") -> "TaskContext":
        """The same context naming items by `codes` (semantic ids; None: atomic ids)."""
        return self if codes is self.item_codes else replace(self, item_codes=codes)

    def with_prompts(self, rec_prompt: RecPrompt, describe_items: bool = True) -> "TaskContext":
        """The same context laying out rec prompts as `rec_prompt`, with or without item descriptions."""
        if (rec_prompt, describe_items) == (self.rec_prompt, self.describe_items):
            return self
        return replace(self, rec_prompt=rec_prompt, describe_items=describe_items)

    def item_name(self, item_id: int) -> str:
        """How prompts and answers name an item: `item_<i>`, or its code tuple `<a_12><b_7><c_201><d_0>`."""
        if self.item_codes is None:
            return item_token(item_id)
        return semantic_item(self.item_codes.tuples[item_id])

    def image_of(self, item_id: int) -> list[int]:
        return [item_id] if self.has_image[item_id] else []

    def item_text(self, item_id: int) -> str:
        """`<image> Category … Title …` (no `<image>` when the item has no picture, no description when
        `describe_items` is off)."""
        parts = [IMAGE] if self.has_image[item_id] else []
        if self.describe_items and self.item_desc[item_id]:
            parts.append(self.item_desc[item_id])
        return " ".join(parts)

    def history(self, items: np.ndarray | list[int], answers: list[str] | None = None) -> tuple[str, list[int]]:
        """Each item followed by `<answer> {its answer} <|endofchunk|>` (default: its name, `item_name`).

        An empty answer leaves the item without a reconstruction span. Returns (text, image items).
        """
        chunks, images = [], []
        for k, item in enumerate(items):
            item = int(item)
            answer = self.item_name(item) if answers is None else answers[k]
            head = self.item_text(item)
            tail = f"{ANSWER} {answer_span(answer)}" if answer else EOC
            chunks.append(f"{head} {tail}" if head else tail)
            images += self.image_of(item)
        return " ".join(chunks), images


def image_codes_of(ds: Dataset, n_items: int) -> dict[int, list[int]]:
    """item_id -> image codes when `unimp tokenize-images` has run on the folder, else {}."""
    from ..imagegen.codes import has_codes, load_codes

    if not has_codes(ds):
        return {}

    return {int(i): [int(c) for c in codes] for i, codes in load_codes(ds.root).items() if 0 <= i < n_items}


def describe_item(row: dict[str, Any]) -> str:
    """`Category … Price … Brand … Title …`, leaving out the fields the item lacks."""
    parts = []
    category = clean(row.get("category"), FIELD_WORDS)
    if category:
        parts.append(f"Category {category}")
    price = row.get("price")
    if price is not None and math.isfinite(price):
        parts.append(f"Price {price:.2f}")
    brand = clean(row.get("brand"), FIELD_WORDS)
    if brand:
        parts.append(f"Brand {brand}")
    title = clean(row.get("title"), FIELD_WORDS)
    if title:
        parts.append(f"Title {title}")
    return " ".join(parts)


def join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def assemble(task: str, parts: list[tuple[str, list[int]]], answer: str, train: bool,
             meta: dict[str, Any]) -> Sample:
    """Join (text, images) parts and close the prompt with `<answer>`.

    Training samples carry `answer <|endofchunk|>` inside the text; evaluation samples stop at
    `<answer>` and keep the answer aside.
    """
    return answered(task, join(*(t for t, _ in parts), ANSWER), [i for _, im in parts for i in im], answer, train, meta)


def answered(task: str, prompt: str, images: list[int], answer: str, train: bool, meta: dict[str, Any]) -> Sample:
    """A prompt that ends where the answer goes: training samples carry `answer<|endofchunk|>` inside the
    text, evaluation samples keep the answer aside."""
    if train:
        return Sample(task, f"{prompt} {answer_span(answer)}", images, None, meta)
    return Sample(task, prompt, images, answer, meta)


def draw_negatives(rng: np.random.Generator, n_items: int, seen: set[int], k: int) -> list[int] | None:
    """`k` distinct items outside `seen` (None when the catalogue has too few)."""
    available = n_items - len(seen)
    if available < k:
        return None
    if available < 4 * k:  # rejection sampling would crawl: draw from the explicit complement
        pool = np.setdiff1d(np.arange(n_items), np.fromiter(seen, dtype=np.int64, count=len(seen)))
        return [int(x) for x in rng.choice(pool, size=k, replace=False)]
    out: list[int] = []
    while len(out) < k:
        c = int(rng.integers(n_items))
        if c not in seen and c not in out:
            out.append(c)
    return out


def pick_target(rng: np.random.Generator, length: int, history_len: int, valid: np.ndarray | None = None,
                short: Literal["any", "last"] = "any") -> int | None:
    """Draw a target position p in 1..length-1 of a user's usable prefix (history = sequence[max(0, p-h):p]).

    Positions with a full window of `history_len` items are preferred (as the paper's code's windows);
    shorter users fall back to any position >= 1 (`short="any"`) or take the last one (`"last"`:
    its window starts at the first item, so it holds every shorter window with the same context).
    `valid` (bool, indexed by position) filters the positions, e.g. the target needs an explanation.
    None when nothing qualifies.
    """
    positions = np.arange(1, length)
    if valid is not None:
        positions = positions[np.asarray(valid[1:length], dtype=bool)]
    if not len(positions):
        return None
    full = positions[positions >= history_len]
    if not len(full) and short == "last":
        return int(positions[-1])
    pool = full if len(full) else positions
    return int(pool[rng.integers(len(pool))])


def task_rng(seed: int, epoch: int, task: str, stream: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, task, stream): resuming rebuilds the same draws."""
    return np.random.default_rng([seed, epoch, zlib.crc32(task.encode()), stream])


@dataclass(frozen=True)
class Request:
    """What `unimp generate` asks beside the history: --query, --item and --candidates as item ids."""

    query: str | None = None
    item: int | None = None
    candidates: list[int] | None = None


def lazy(path: str) -> Callable[..., Any]:
    """The function at "module:name", imported on its first call (tasks import neither torch nor the model)."""
    module, name = path.split(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = path
    return call


@dataclass(frozen=True)
class Task:
    """A task's whole life cycle, found by name (`unimp_core.tasks.get_task`); RecBole's model classes
    in spirit. Register a new one with `unimp_core.tasks.register`.

    Prompts (no model):
        training(ctx, rng, history_len) -> samples (one per training user at most, per epoch)
        evaluation(ctx, instances, history_len) -> samples (one per stored instance row that qualifies)
        draw_instances(positions, items, rng) -> the eval/<name>.parquet table `unimp prepare` stores
            (positions: user_id, split, position, item_id/rating/explanation lists); None: the task
            reads the table of `instances`
        prompt(ctx, user_id, seq, history_len, request) -> the `unimp generate` prompt for what follows
            `seq`; `request` is the GenerateSpec with --item/--candidates resolved to item ids
    Training:
        configure(spec, ds) -> TrainSpec: a new run's spec adapted to the dataset before the model is built
            (img_gen: the codebook size)
    Evaluation (unimp_core.evaluation.scoring):
        records(ev, samples, mine, advance) -> one record per instance index in `mine` (rank or generate)
        summary(records, samples, ev) -> the task's metrics (its entry in metrics.json)
        check(ev) -> None: fail early, before any task runs (e.g. img_gen's VQ model)
        report(res, report) -> (rich table, notes): the terminal view of its metrics
    Generation (unimp_core.generation):
        answer(loaded, batch, request, items, history) -> the result's task fields
        show(result) -> rich renderables; html(result, card) -> HTML of the answer
    Report (unimp_core.report):
        example(record, pair) -> HTML of one generated answer (its prediction line; `pair`: the
            generated|true PNG beside it, or None) shown under the user's history; None: no examples
    Settings:
        history_len: the task's own history length (None: the run's)
        instances: the stored eval table its evaluation reads (None: its own name)
        ranked: it ranks the catalogue: --decode and --exclude-history change its numbers (they then name
            the evaluation folder) and `unimp evaluate --compare` sets runs side by side on it
        selects_checkpoints: its valid-split ranking picks the best checkpoint of a run that trains it
        data_needs: what the dataset must hold for the task to mean anything (names of
            `unimp_core.tasks.DATA_NEEDS`: images, reviews, categories); prepare draws no instances and
            train refuses the task on a dataset without them
        needs / accepts: the GenerateSpec options (query, item, candidates, out) the task requires /
            also takes; other tasks refuse them
        endpoint: the name `unimp serve` answers it under (POST /v1/<endpoint>, its body and answer in
            `unimp_core.serve.api.POSTS`); None: not served
    """

    name: str
    training: Callable[[TaskContext, np.random.Generator, int], list[Sample]]
    evaluation: Callable[[TaskContext, pl.DataFrame, int], list[Sample]]
    history_len: int | None = None
    instances: str | None = None
    draw_instances: Callable[..., pl.DataFrame] | None = None
    prompt: Callable[..., Sample] | None = None
    configure: Callable[..., None] | None = None
    records: Callable[..., list[dict]] | None = None
    summary: Callable[..., dict] | None = None
    check: Callable[..., None] | None = None
    report: Callable[..., tuple[Any, list[str]]] | None = None
    answer: Callable[..., dict] | None = None
    show: Callable[..., list] | None = None
    html: Callable[..., str] | None = None
    example: Callable[..., str] | None = None
    ranked: bool = False
    selects_checkpoints: bool = False
    data_needs: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    accepts: tuple[str, ...] = ()
    endpoint: str | None = None

    def step(self, name: str) -> Callable[..., Any]:
        """The task's `name` step; a task without it is one clear error."""
        fn = getattr(self, name)
        if fn is None:
            raise UnimpError(f"task {self.name!r} has no {name} step (it cannot be used this way)")
        return fn
