"""`unimp generate`: what the model says for one user (or a given history), printable and as HTML.

    rec      the next items, scored over the whole catalogue (top-k with probabilities)
    search   the items for a query
    exp      the rating and explanation the user would give an item
    img_sel  which of 2-5 pictured candidates the user takes
    img_gen  an image for a query (exactly one image's code tokens, decoded by the dataset's VQ model)

Prompts are built by the same task code as training and evaluation; the only difference is that the
answer is unknown (the task builders get a placeholder target, which only goes into `Sample.answer`).
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .data.store import Dataset
from .errors import UnimpError
from .io import check_writable, safe_join, write_bytes_atomic
from .model.families import capability
from .progress import Progress
from .specs.evaluate import GenerateSpec
from .tasks import TASKS, Sample, TaskContext, get_task, run_history_lengths
from .tasks.base import Request

UNSEEN_USER = -1  # id of the user a --history stands for
_PREFIXED = re.compile(r"^(id|key|src):(.*)$")
_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif", ".webp": "image/webp"}


# ------------------------------------------------------------------------------------------ lookups


def list_users(run: Path, data: Path | None = None) -> pl.DataFrame:
    """The users of the run's dataset: user_id, user_key, split, length (history length)."""
    from .run_folder import dataset_folder, read_train_spec

    root = dataset_folder(run, read_train_spec(run), data)
    return pl.read_parquet(Path(root) / "users.parquet").select("user_id", "user_key", "split", "length").sort("user_id")


def resolve_user(users: pl.DataFrame, text: str, run: Path, option: str = "--user", hint: str | None = None) -> int:
    """An internal user id or an original user key (`id:N` / `key:K` say which) -> user id.

    `option` and `hint` name the input and where to find the users in the error messages.
    """
    hint = hint or f"list them with `unimp generate --run {run} --list-users`"
    m = _PREFIXED.match(text)
    kind, value = (m.group(1), m.group(2)) if m else (None, text)
    by_id = None
    digits = value.strip()
    if kind in (None, "id") and digits.isascii() and digits.isdigit() and len(digits) < 19:  # beyond int64: no such id
        uid = int(value)
        by_id = uid if (users["user_id"] == uid).any() else None
    by_key = None
    if kind in (None, "key"):
        hit = users.filter(pl.col("user_key") == value)["user_id"]
        by_key = int(hit[0]) if hit.len() else None
    if kind == "src":
        raise UnimpError(f"{option} {text}: use id:N or key:K for users (src: is for items)")
    if by_id is not None and by_key is not None and by_id != by_key:
        raise UnimpError(f"{option} {text}: both user id {by_id} and the key of user {by_key}; say id:{value} or key:{value}")
    found = by_id if by_id is not None else by_key
    if found is None:
        raise UnimpError(f"{option} {text}: no such user id or user key in this dataset; {hint}")
    return found


def resolve_items(items: pl.DataFrame, texts: list[str], option: str) -> list[int]:
    """Item ids or source ids (`id:N` / `src:S` say which) -> item ids."""
    n = items.height
    source = dict(zip(items["source_id"].to_list(), items["item_id"].to_list()))
    out = []
    for text in texts:
        text = text.strip()
        m = _PREFIXED.match(text)
        kind, value = (m.group(1), m.group(2)) if m else (None, text)
        if kind == "key":
            raise UnimpError(f"{option} {text}: use id:N or src:S for items (key: is for users)")
        # ASCII digits only: "²" is a digit to str.isdigit but not to int()
        by_id = int(value) if kind in (None, "id") and value.isascii() and value.isdigit() and int(value) < n else None
        by_src = source.get(value) if kind in (None, "src") else None
        if by_id is not None and by_src is not None and by_id != by_src:
            raise UnimpError(f"{option} {text}: both item id {by_id} and the source id of item {by_src}; "
                             f"say id:{value} or src:{value}")
        found = by_id if by_id is not None else by_src
        if found is None:
            raise UnimpError(f"{option} {text}: no item with this id (0..{n - 1}) or source id")
        out.append(int(found))
    return out


def _finite(x: float) -> float | None:
    """A score for JSON: NaN and infinities (a diverged model) become null, which strict parsers accept."""
    return x if math.isfinite(x) else None


def item_row(items: pl.DataFrame, item_id: int) -> dict[str, Any]:
    """What is shown of an item: ids, title, category, price and its image path (relative)."""
    row = items.row(item_id, named=True)
    price = row.get("price")
    return {"item_id": int(item_id), "source_id": row.get("source_id"), "title": row.get("title") or "",
            "category": row.get("category") or "", "price": None if price is None or not math.isfinite(price) else price,
            "image": row.get("image")}


# ------------------------------------------------------------------------------------------ prompts


def _user_context(ctx: TaskContext, user_id: int | None, history: list[int]) -> tuple[TaskContext, int, np.ndarray]:
    """A context holding just the user the prompt is about (a known user, or an unseen one with `history`)."""
    if user_id is not None:
        seq = ctx.sequence(user_id)
        ratings, expls = list(ctx.ratings[user_id]), list(ctx.explanations[user_id])
    else:
        user_id, seq = UNSEEN_USER, np.asarray(history, dtype=np.int64)
        ratings, expls = [None] * len(seq), [""] * len(seq)
    return replace(ctx, sequences={user_id: seq}, ratings={user_id: ratings}, explanations={user_id: expls}), user_id, seq


def build_prompt(ctx: TaskContext, task: str, user_id: int | None, history: list[int], history_len: int,
                 query: str | None = None, item: int | None = None, candidates: list[int] | None = None) -> Sample:
    """The evaluation-style prompt (ending at `<answer>`) asking `task` about what follows the history."""
    ctx, uid, seq = _user_context(ctx, user_id, history)
    if len(seq) == 0:
        raise UnimpError("the history is empty: the model needs at least one item")
    return get_task(task).step("prompt")(ctx, uid, seq, history_len, Request(query, item, candidates))


# --------------------------------------------------------------------------------------------- run


@dataclass
class Prepared:
    """One question resolved against a loaded run: its prompt and what the answer is shown with."""

    spec: GenerateSpec
    sample: Sample
    history: list[int]  # the user's whole history (the prompt shows its last history_len items)
    head: dict[str, Any]  # the result's fields that do not depend on the model


def prepare(loaded, spec: GenerateSpec, items: pl.DataFrame | None = None) -> Prepared:
    """Resolve `spec`'s user (or history) and items against the loaded run and build its prompt.

    Args:
        items: the catalogue sorted by item id (default: sorted here; a server passes it once).
    """
    ds, ctx = loaded.dataset, loaded.ctx
    items = ds.items.sort("item_id") if items is None else items
    if spec.user is not None:
        users = ds.users
        uid = resolve_user(users, spec.user, spec.run)
        urow = users.filter(pl.col("user_id") == uid).row(0, named=True)
        user = {"user_id": uid, "user_key": urow["user_key"], "split": urow["split"], "unseen": False}
        history = ctx.sequence(uid).tolist()
    else:
        uid, history = None, resolve_items(items, spec.history, "--history")
        user = {"user_id": None, "user_key": None, "split": None, "unseen": True}
    item = resolve_items(items, [spec.item], "--item")[0] if spec.item else None
    candidates = resolve_items(items, spec.candidates, "--candidates") if spec.candidates else None
    read = capability(loaded.setup.family, "history_window")  # a model that reads its last N items, not a prompt
    window = read(loaded.bundle) if read is not None else None
    history_len = spec.history_len or window or run_history_lengths(loaded.train_spec.data, [spec.task],
                                                                     spec.history_len)[spec.task]
    sample = build_prompt(ctx, spec.task, uid, history, history_len, spec.query, item, candidates)
    sample = replace(sample, meta={**sample.meta, "history": history[-history_len:]})
    head: dict[str, Any] = {
        "task": spec.task, "run": str(spec.run), "checkpoint": spec.checkpoint, "dataset": str(ds.root),
        "synthetic": bool(ds.manifest.get("synthetic", False)), "user": user,
        "history": [item_row(items, i) for i in history[-history_len:]], "history_total": len(history),
    }
    return Prepared(spec, sample, history, head)


def answer(loaded, spec: GenerateSpec, prepared: Prepared | None = None, items: pl.DataFrame | None = None) -> dict[str, Any]:
    """Answer `spec.task` for one user with a loaded run: a JSON-able result (an image's pixels as a data URI)."""
    items = loaded.dataset.items.sort("item_id") if items is None else items
    p = prepared or prepare(loaded, spec, items)
    if get_task(spec.task).ranked:  # scored by the model family (one that reads item ids has no prompts to collate)
        return answer_ranked(loaded, [p], items)[0]
    batch = loaded.setup.decoder.to_device(loaded.collator()([p.sample]), loaded.device)
    return {**p.head, **get_task(spec.task).step("answer")(loaded, batch, spec, items, p.history)}


def answer_ranked(loaded, prepared: list[Prepared], items: pl.DataFrame) -> list[dict[str, Any]]:
    """rec / search for several prepared questions at once: one collated batch, one forward pass
    (what `unimp serve` batches; each result equals `answer`'s for the same question)."""
    scores = loaded.setup.family.rank_scores(loaded.setup, loaded.bundle.model, [p.sample for p in prepared],
                                             device=loaded.device, max_tokens=loaded.max_tokens)  # (B, N)
    lists = rank_items(loaded, scores, [p.history for p in prepared], [p.spec.k for p in prepared],
                       [p.spec.exclude_history for p in prepared], items)
    return [{**p.head, **_ranking_fields(loaded, p.spec, recs)} for p, recs in zip(prepared, lists)]


def check_options(spec: GenerateSpec) -> None:
    """Refuse --query, --item, --candidates or --out where `spec.task` does not take it, and their absence
    where it needs one (`Task.needs`, `Task.accepts`)."""
    given = {"query": spec.query, "item": spec.item, "candidates": spec.candidates, "out": spec.out}
    task = get_task(spec.task)
    for name, value in given.items():
        if name in task.needs and not value:
            raise UnimpError(f"--task {spec.task} needs --{name}")
        takers = [t.name for t in TASKS.values() if name in t.needs + t.accepts]
        if spec.task not in takers and value:
            raise UnimpError(f"--{name} is only for --task {' / '.join(takers)}")


def run_generate(spec: GenerateSpec, progress: Progress | None = None) -> dict[str, Any]:
    """Answer `spec.task` for one user; returns a JSON-able result (and writes `spec.html` if set)."""
    import torch

    from .model.setup import load_run

    from .evaluation.runner import check_family_tasks, with_checkpoint

    progress = progress or Progress()
    check_options(spec)
    check_writable(spec.html, "--html", spec.force)  # before the model is loaded, not after
    check_writable(spec.out, "--out", spec.force)
    spec, chosen = with_checkpoint(spec)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_run(spec.run, spec.checkpoint, spec.data, device=device, history_len=spec.history_len,
                      max_tokens=spec.max_tokens, progress=progress)
    check_family_tasks(loaded, [spec.task])
    result = {**answer(loaded, spec), "checkpoint_note": chosen}
    if spec.html is not None:
        write_html(result, loaded.dataset, spec.html, replace=spec.force)
        result["html"] = str(spec.html)
    if "image" in result:
        result["image"].pop("data_uri", None)  # only the page needs the pixels
    return result


# ----------------------------------------------------------------------------------- answers by kind


def rank_items(loaded, scores, histories: list[list[int]], ks: list[int], exclude: list[bool],
               items: pl.DataFrame) -> list[list[dict[str, Any]]]:
    """rec / search for a batch of prompts scored in one forward pass (the exact ranking `evaluate` uses).

    Args:
        scores: (B, N) CPU scores of every catalogue item (the model family's `rank_scores`).
        histories, ks, exclude: per prompt, the user's history, how many items to list and whether
            history items may be listed.
    Returns:
        Per prompt, its top items best first: rank, the item's row, probability (score), logit, in_history.
    """
    import torch

    from .evaluation import topk

    probs = torch.softmax(scores, dim=1)  # over the catalogue: how sure the model is, 0..1
    mask = (topk.exclusion_mask([h if ex else [] for h, ex in zip(histories, exclude)], None, loaded.bundle.n_items)
            if any(exclude) else None)  # (B, N)
    top_p, top_i = topk.top_items(probs, max(ks), mask)  # (B, max k)
    out = []
    for row, (history, k) in enumerate(zip(histories, ks)):
        seen = set(history)
        listed = [(i, p) for i, p in zip(top_i[row, :k].tolist(), top_p[row, :k].tolist()) if p != float("-inf")]
        out.append([{"rank": r + 1, **item_row(items, i), "score": _finite(p), "logit": _finite(float(scores[row, i])),
                     "in_history": i in seen}
                    for r, (i, p) in enumerate(listed)])  # excluded items (-inf) are never listed
    return out


def _ranking_fields(loaded, spec: GenerateSpec, recommendations: list[dict[str, Any]]) -> dict[str, Any]:
    ids = getattr(loaded.bundle, "ids", None)
    score = ("softmax of the item scores over the whole catalogue" if ids is None
             else "probability of the item's code path, each level's softmax over the codes that continue a real "
                  "item" if ids.semantic
             else "probability of the item token among all item tokens")
    out: dict[str, Any] = {"recommendations": recommendations, "score": score, "exclude_history": spec.exclude_history}
    if len(recommendations) < spec.k:
        left = "outside the user's history" if spec.exclude_history else "in the catalogue"
        out["k_note"] = f"{len(recommendations)} of the {spec.k} asked: only that many items {left}"
    if spec.query is not None:
        out["query"] = spec.query
    return out


def ranking_answer(loaded, batch: dict[str, Any], spec: GenerateSpec, items: pl.DataFrame,
                   history: list[int]) -> dict[str, Any]:
    """rec / search (a token model's collated prompt): the top-k items over the whole catalogue, with their probabilities."""
    scores = capability(loaded.setup.family, "collated_scores")(loaded.setup, loaded.bundle.model, batch)  # (1, N)
    return _ranking_fields(loaded, spec, rank_items(loaded, scores, [history], [spec.k], [spec.exclude_history], items)[0])


def _generated_text(loaded, batch: dict[str, Any], spec: GenerateSpec) -> str:
    ids = loaded.bundle.ids
    return loaded.setup.decoder.generate_texts(loaded.bundle.model, batch, loaded.bundle.tokenizer, max_new_tokens=spec.max_new_tokens,
                            num_beams=spec.num_beams, eoc_id=ids.eoc, pad_id=ids.pad, eos_id=ids.eos)[0]


def exp_answer(loaded, batch: dict[str, Any], spec: GenerateSpec, items: pl.DataFrame,
               history: list[int]) -> dict[str, Any]:
    """exp: the rating and explanation generated for --item."""
    from .evaluation import metrics as M

    text = _generated_text(loaded, batch, spec)
    rating, explanation = M.parse_exp_output(text)
    item = resolve_items(items, [spec.item], "--item")[0]
    return {"generated": text, "item": item_row(items, item), "rating": rating, "explanation": explanation}


def selection_answer(loaded, batch: dict[str, Any], spec: GenerateSpec, items: pl.DataFrame,
                     history: list[int]) -> dict[str, Any]:
    """img_sel: which of --candidates the generated slots pick."""
    from .evaluation import metrics as M

    text = _generated_text(loaded, batch, spec)
    slots, _ = M.parse_slots(text)
    candidates = resolve_items(items, spec.candidates, "--candidates")
    return {"generated": text, "candidates": [{"slot": j, **item_row(items, c), "selected": j in slots}
                                              for j, c in enumerate(candidates)]}


def image_answer(loaded, batch: dict[str, Any], spec: GenerateSpec, items: pl.DataFrame,
                 history: list[int]) -> dict[str, Any]:
    """img_gen: exactly one image's codes, decoded by the dataset's VQ model; written to `spec.out` as PNG."""
    from .evaluation import image_gen as IG
    from .evaluation.scoring import image_tokenizer

    vq = image_tokenizer(loaded, loaded.device)
    ids = loaded.bundle.ids
    codes = IG.generate_codes(loaded.setup.decoder, loaded.bundle.model, batch, ids.image_codes, vq.codes_per_image, eoc_id=ids.eoc,
                              pad_id=ids.pad, num_beams=spec.num_beams)  # (1, grid*grid)
    png = IG.png_bytes(vq.decode(codes)[0])
    if spec.out is not None:
        write_output(spec.out, png, "--out", spec.force)
    return {"query": spec.query, "image": {
        "codes": codes[0].tolist(), "grid": vq.grid, "resolution": vq.resolution,
        "path": None if spec.out is None else str(spec.out),
        "data_uri": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}}


# -------------------------------------------------------------------------------------------- HTML


CARD_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:22px 0 8px}
.meta{color:#555;font-size:13px}
.synthetic{display:inline-block;background:#ffe08a;color:#5a4500;font-weight:bold;padding:3px 8px;border-radius:4px}
.row{display:flex;flex-wrap:wrap;gap:12px}
.card{width:150px;background:#fff;border:1px solid #ddd;border-radius:8px;padding:8px;font-size:12px}
.card img,.card .noimg{width:134px;height:134px;object-fit:contain;image-rendering:pixelated;border-radius:4px;
 background:#eee;display:block}
.card .noimg{display:flex;align-items:center;justify-content:center;color:#999}
.title{font-weight:600;margin:6px 0 2px} .score{color:#0a6;font-weight:bold} .seen{color:#a60}
.picked{border:3px solid #0a6} .answer{background:#fff;border:1px solid #ddd;border-radius:8px;padding:12px;max-width:640px}
"""


def _data_uri(ds: Dataset, rel: str | None) -> str | None:
    if not rel or ds.root is None:
        return None
    try:
        path = safe_join(ds.root, rel)
    except UnimpError:
        return None
    mime = _MIME.get(path.suffix.lower())
    if mime is None or not path.is_file():
        return None
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def item_card(ds: Dataset, row: dict[str, Any], extra: str = "", cls: str = "card") -> str:
    e = html.escape
    uri = _data_uri(ds, row.get("image"))
    img = f'<img src="{uri}" alt="item {row["item_id"]}">' if uri else '<div class="noimg">no image</div>'
    price = f" · {row['price']:.2f}" if row.get("price") is not None else ""
    return (f'<div class="{cls}">{img}<div class="title">{e(str(row["title"]))}</div>'
            f'<div>{e(str(row["category"]))}{price}</div>'
            f'<div class="meta">item {row["item_id"]} · {e(str(row["source_id"]))}</div>{extra}</div>')


def render_html(result: dict[str, Any], ds: Dataset) -> str:
    """A self-contained page (images embedded as data URIs) with the history and the model's answer."""
    e = html.escape
    user = result["user"]
    who = "an unseen user" if user["unseen"] else f"user {user['user_id']} ({e(str(user['user_key']))})"
    head = f"{e(result['task'])} for {who}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>unimp — {head}</title>",
             f"<style>{CARD_CSS}</style></head><body>", f"<h1>{head}</h1>",
             f"<div class='meta'>run {e(result['run'])} · checkpoint {e(result['checkpoint'])} · "
             f"dataset {e(result['dataset'])}</div>"]
    if result["synthetic"]:
        parts.append("<p><span class='synthetic'>SYNTHETIC sample data</span> — generated items, users and images</p>")
    parts.append(f"<h2>Recent history ({len(result['history'])} of {result['history_total']} items, oldest first)</h2>")
    parts.append("<div class='row'>" + "".join(item_card(ds, r) for r in result["history"]) + "</div>")
    parts.append(get_task(result["task"]).step("html")(result, lambda row, extra="", cls="card": item_card(ds, row, extra, cls)))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(result: dict[str, Any], ds: Dataset, path: Path, replace: bool = False) -> None:
    """Write `render_html` atomically (replacing an existing file only with `replace`)."""
    write_output(path, render_html(result, ds).encode("utf-8"), "--html", replace)


def write_output(path: Path, data: bytes, flag: str, replace: bool) -> None:
    """A file the user named, written atomically; one that appeared since `check_writable` is kept."""
    try:
        write_bytes_atomic(path, data, replace=replace)
    except FileExistsError:
        raise UnimpError(f"{flag} {path}: the file exists; add --force to replace it") from None


def ranking_html(result: dict[str, Any], card) -> str:
    e = html.escape
    label = f"Results for “{e(result['query'])}”" if result.get("query") else "Recommended next"
    parts = [f"<h2>{label} (score: {e(result['score'])})</h2><div class='row'>"]
    for r in result["recommendations"]:
        seen = " <span class='seen'>in history</span>" if r["in_history"] else ""
        parts.append(card(r, f"<div>#{r['rank']} <span class='score'>{r['score']:.4f}</span>{seen}</div>"))
    parts.append("</div>")
    return "\n".join(parts)


def image_html(result: dict[str, Any], card) -> str:
    img = result["image"]
    return (f"<h2>Generated image for “{html.escape(str(result['query']))}” ({img['resolution']} px, "
            f"{img['grid']}x{img['grid']} codes)</h2><div class='row'><div class='card picked'>"
            f"<img src=\"{img['data_uri']}\" alt=\"generated image\"><div class='title'>generated</div>"
            "</div></div>")


def exp_html(result: dict[str, Any], card) -> str:
    e = html.escape
    rating = result["rating"] if result["rating"] is not None else "no parsable rating"
    return ("<h2>Item</h2><div class='row'>" + card(result["item"]) + "</div>\n"
            f"<h2>Predicted rating and explanation</h2><div class='answer'><b>rating:</b> {e(str(rating))}"
            f"<br><b>explanation:</b> {e(result['explanation'])}</div>")


def selection_html(result: dict[str, Any], card) -> str:
    parts = ["<h2>Candidates (selected ones framed)</h2><div class='row'>"]
    for c in result["candidates"]:
        mark = "<div class='score'>selected</div>" if c["selected"] else "<div class='meta'>not selected</div>"
        parts.append(card(c, f"<div>slot s_{c['slot']}</div>{mark}", "card picked" if c["selected"] else "card"))
    parts.append(f"</div><p class='meta'>generated: {html.escape(result['generated'])}</p>")
    return "\n".join(parts)
