"""`unimp generate`'s core: user and item lookup, prompts, answers and the HTML page."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import polars as pl
import pytest

from tests.browser import CHROMIUM
from tests.conftest import skip_unless_ci
from tests.evaluation.trained import trained_run
from unimp_core.errors import UnimpError
from unimp_core.generation import build_prompt, list_users, render_html, resolve_items, resolve_user, run_generate
from unimp_core.specs.evaluate import GenerateSpec
from unimp_core.tasks import build_eval_samples, context
from unimp_core.tokens import ANSWER, IMAGE


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def dataset(run):
    from unimp_core.data.store import load_dataset

    return load_dataset(json.loads((run / "train_spec.json").read_text())["data"]["path"])


# ------------------------------------------------------------------------------------------ lookups


def test_resolve_user_by_id_key_and_prefix(run):
    users = pl.DataFrame({"user_id": [0, 1, 2], "user_key": ["a:0", "2", "c"]})
    assert resolve_user(users, "0", run) == 0
    assert resolve_user(users, "c", run) == 2 and resolve_user(users, "key:c", run) == 2
    assert resolve_user(users, "id:2", run) == 2 and resolve_user(users, "key:2", run) == 1
    with pytest.raises(UnimpError, match="say id:2 or key:2"):
        resolve_user(users, "2", run)  # user id 2 and the key of user 1
    with pytest.raises(UnimpError, match="--list-users"):
        resolve_user(users, "zz", run)
    with pytest.raises(UnimpError, match="--list-users"):
        resolve_user(users, "id:7", run)


def test_resolve_items_by_id_source_and_prefix():
    items = pl.DataFrame({"item_id": [0, 1, 2], "source_id": ["B00X", "0", "Z9"]})
    assert resolve_items(items, ["2", "B00X", "src:Z9", "id:1", "src:0"], "--history") == [2, 0, 2, 1, 1]
    with pytest.raises(UnimpError, match="say id:0 or src:0"):
        resolve_items(items, ["0"], "--history")
    with pytest.raises(UnimpError, match=r"--item nope: no item .*0\.\.2"):
        resolve_items(items, ["nope"], "--item")
    with pytest.raises(UnimpError, match="no item"):
        resolve_items(items, ["5"], "--item")


def test_list_users(run, dataset):
    users = list_users(run)
    assert users.columns == ["user_id", "user_key", "split", "length"] and users.height == dataset.users.height


# ------------------------------------------------------------------------------------------ prompts


def test_rec_prompt_of_a_known_user_is_the_evaluation_prompt(dataset):
    ctx = context(dataset)
    sample = build_eval_samples(dataset, "rec", "test", 5, ctx)[0]
    user = sample.meta["user_id"]
    history = ctx.sequence(user)[: sample.meta["position"]].tolist()
    # evaluate asks about the target after its history; generate asks what follows a history
    truncated = dict(ctx.sequences)
    truncated[user] = np.asarray(history)
    from dataclasses import replace

    prompt = build_prompt(replace(ctx, sequences=truncated), "rec", user, history, 5)
    assert prompt.text == sample.text and prompt.image_items == sample.image_items


@pytest.mark.parametrize("task", ["rec", "search", "exp", "img_sel"])
def test_prompts_for_an_unseen_history(dataset, task):
    ctx = context(dataset)
    prompt = build_prompt(ctx, task, None, [3, 1, 4], 5, query="Hats", item=7, candidates=[5, 9, 2])
    assert prompt.text.endswith(ANSWER) and prompt.text.count(IMAGE) == len(prompt.image_items)
    assert prompt.image_items[:3] == [3, 1, 4]  # every sample item has a picture
    if task == "search":
        assert "Query: Hats" in prompt.text
    if task == "img_sel":
        assert prompt.image_items[-3:] == [5, 9, 2] and "s_2" in prompt.text
    if task == "exp":
        assert prompt.image_items[-1] == 7
    with pytest.raises(UnimpError, match="empty"):
        build_prompt(ctx, task, None, [], 5, query="q", item=1, candidates=[1, 2])


# ---------------------------------------------------------------------------------------- answers


@pytest.fixture(scope="module")
def rec_result(run, tmp_path_factory):
    page = tmp_path_factory.mktemp("html") / "user.html"
    return run_generate(GenerateSpec(run=run, user="3", k=7, html=page)), page


def test_rec_for_a_user_lists_k_items_best_first(rec_result, dataset):
    result, _ = rec_result
    assert result["user"]["user_id"] == 3 and result["user"]["user_key"] == dataset.users["user_key"][3]
    recs = result["recommendations"]
    assert [r["rank"] for r in recs] == list(range(1, 8))
    scores = [r["score"] for r in recs]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert {"item_id", "source_id", "title", "category", "price", "score"} <= set(recs[0])
    seq = context(dataset).sequence(3).tolist()
    assert [h["item_id"] for h in result["history"]] == seq[-5:] and result["history_total"] == len(seq)
    assert [r["in_history"] for r in recs] == [r["item_id"] in set(seq) for r in recs]


def test_html_page_is_self_contained_and_labelled_synthetic(rec_result):
    result, page = rec_result
    text = page.read_text()
    assert result["html"] == str(page)
    assert text.count("data:image/jpeg;base64,") == len(result["history"]) + len(result["recommendations"])
    assert "SYNTHETIC" in text and "src=\"images/" not in text and "http" not in text
    for r in result["recommendations"]:
        assert f"item {r['item_id']} " in text


def test_history_excluded_by_default_kept_on_request_and_unseen_user(run, dataset):
    seq = context(dataset).sequence(3).tolist()
    result = run_generate(GenerateSpec(run=run, user="3", k=20))
    assert result["exclude_history"] and not set(seq) & {r["item_id"] for r in result["recommendations"]}
    kept = run_generate(GenerateSpec(run=run, user="3", k=40, exclude_history=False))
    assert not kept["exclude_history"] and set(seq) <= {r["item_id"] for r in kept["recommendations"]}
    sources = dataset.items["source_id"].to_list()
    unseen = run_generate(GenerateSpec(run=run, history=[sources[4], "id:6"], task="search", query="Hats", k=3))
    assert unseen["user"]["unseen"] and [h["item_id"] for h in unseen["history"]] == [4, 6]
    assert unseen["query"] == "Hats" and len(unseen["recommendations"]) == 3


@pytest.fixture
def scripted(run, monkeypatch):
    """Make the model "generate" a given text: generation returns its token ids, and everything after
    (cutting at the end of chunk, decoding, parsing) is the real code."""
    import torch

    from unimp_core.model.openflamingo import decode as R
    from unimp_core.model.tokenizer import load_tokenizer

    tok = load_tokenizer(run / "tokenizer", local_files_only=True)
    said = {}

    def fake_generate(model, batch, **kw):
        ids = [tok.convert_tokens_to_ids(t) if t.startswith(("s_", "rate_", "<|")) else tok.encode(" " + t)
               for t in said["text"].split()]
        flat = [i for x in ids for i in (x if isinstance(x, list) else [x])]
        return torch.tensor([flat] * batch["input_ids"].shape[0]), None

    monkeypatch.setattr(R, "generate", fake_generate)
    return said


def test_img_sel_marks_the_slots_the_model_names(run, scripted):
    scripted["text"] = "s_2 s_0 <|endofchunk|> s_1"  # after the end of the chunk nothing counts
    sel = run_generate(GenerateSpec(run=run, user="3", task="img_sel", candidates=["4", "5", "6"]))
    assert sel["generated"] == "s_2 s_0"
    assert [c["slot"] for c in sel["candidates"]] == [0, 1, 2] and [c["item_id"] for c in sel["candidates"]] == [4, 5, 6]
    assert [c["selected"] for c in sel["candidates"]] == [True, False, True]
    scripted["text"] = "none of them"
    sel = run_generate(GenerateSpec(run=run, user="3", task="img_sel", candidates=["4", "5"]))
    assert [c["selected"] for c in sel["candidates"]] == [False, False]


def test_exp_splits_rating_and_explanation(run, scripted):
    scripted["text"] = "rate_4 fits well and looks good <|endofchunk|> rate_1 ignored"
    exp = run_generate(GenerateSpec(run=run, user="3", task="exp", item="2", max_new_tokens=12))
    assert exp["item"]["item_id"] == 2
    assert exp["rating"] == 4 and exp["explanation"] == "fits well and looks good"
    scripted["text"] = "lovely colour"
    exp = run_generate(GenerateSpec(run=run, user="3", task="exp", item="2"))
    assert exp["rating"] is None and exp["explanation"] == "lovely colour"


def test_render_html_escapes_text(dataset):
    row = {"item_id": 0, "source_id": "<b>x</b>", "title": "<script>alert(1)</script>", "category": "c", "price": None,
           "image": "../../etc/passwd"}
    result = {"task": "rec", "run": "r", "checkpoint": "final", "dataset": "d", "synthetic": False,
              "user": {"user_id": None, "user_key": None, "split": None, "unseen": True}, "history": [row],
              "history_total": 1, "recommendations": [{**row, "rank": 1, "score": 0.5, "in_history": True}],
              "score": "p"}
    text = render_html(result, dataset)
    assert "<script>" not in text and "&lt;script&gt;" in text and "no image" in text and "SYNTHETIC" not in text


def test_html_page_renders_in_headless_chromium(rec_result, tmp_path):
    from PIL import Image

    if CHROMIUM is None:
        skip_unless_ci("chromium is not installed (Debian package `chromium`)")
    _, page = rec_result
    shot = tmp_path / "page.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1200,900", page.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.is_file(), "chromium wrote no screenshot"
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (900, 1200)
    assert pixels.std() > 10  # not a blank page
    # the item pictures are drawn: strongly coloured pixels, not just black text on a light page
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 100).mean() > 0.01
