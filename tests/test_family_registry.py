"""The model-family registry: a family defined in this file alone (`popular`: every user gets the items most
often bought in the training data) is registered and runs through `unimp train`, `unimp evaluate --compare`
(beside a SASRec run), `unimp generate` and `unimp serve` on the command line, with no other file knowing
its name; its recipe is built from the shared training helpers."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import pytest
import torch
from pydantic import Field

from unimp_core import run_folder as RF
from unimp_core.model.families import FAMILIES, register, unregister
from unimp_core.specs.model import FamilySpec

NAME = "popular"


class PopularSpec(FamilySpec):
    """Most popular: every item scored by how often the training data holds it."""

    TITLE: ClassVar[str] = "Most popular"
    CLI_HELP: ClassVar[str] = "every user gets the items most often in the training data"

    family: Literal["popular"] = Field(default="popular", description="Model family: popular, a test's toy.")
    smoothing: float = Field(default=1.0, ge=0, description="Added to every item's count.")

    def train_defaults(self) -> dict[str, dict[str, Any]]:
        return {"data": {"tasks": ["rec"]}, "run": {"epochs": 1.0}}

    def check_train(self, spec) -> None:
        if spec.data.tasks != ["rec"]:
            raise ValueError("popular ranks items: task rec only")


class Popular(torch.nn.Module):
    def __init__(self, n_items: int):
        super().__init__()
        self.log_counts = torch.nn.Parameter(torch.zeros(n_items))  # (N,)


@dataclass
class Bundle:
    model: Popular
    n_items: int
    spec: PopularSpec


class PopularFamily:
    NAME = NAME
    TASKS = ("rec",)

    def build(self, spec, ds, progress) -> Bundle:
        return Bundle(Popular(ds.items.height), ds.items.height, spec.model)

    def save(self, bundle: Bundle, run_dir: Path) -> None:
        RF.write_model_meta(run_dir, NAME, bundle.spec.model_dump(mode="json"), bundle.n_items)

    def load(self, run_dir: Path, meta: dict[str, Any], progress) -> Bundle:
        return Bundle(Popular(meta["n_items"]), meta["n_items"], PopularSpec.model_validate(meta["spec"]))

    @torch.no_grad()
    def rank_scores(self, setup, model: Popular, samples: Sequence, *, device, max_tokens=None, precision="fp32"):
        return model.log_counts.detach().float().cpu().expand(len(samples), -1).clone()  # (B, N)

    def recipe(self, spec, progress=None) -> Path:
        """setup -> "train" (count) -> validate (best/) -> save (final/), on the shared helpers."""
        from unimp_core.model.setup import setup_model, trainable_state
        from unimp_core.progress import Progress
        from unimp_core.tasks import build_eval_samples, context
        from unimp_core.training import checkpoint as ckpt
        from unimp_core.training.distributed import make_accelerator, reset_accelerate_state
        from unimp_core.training.recipe import RunFolder, record_dataset, setup_dataset, setup_run_dir
        from unimp_core.training.selection import Selection, metric_name, rank_valid, record_validation

        progress = progress or Progress()
        try:
            spec, ds = setup_dataset(spec)
            run = RunFolder(spec, Path(spec.run.out), make_accelerator(spec, log_dir=spec.run.out), progress)
            fresh = setup_run_dir(run)
            record_dataset(run, ds)
            setup = setup_model(spec, ds, run.out, fresh=fresh, progress=progress)
            model = setup.bundle.model
            ctx = context(ds)
            seen = [ctx.sequences[u][:n] for u, n in ctx.train_lengths.items()]
            counts = np.bincount(np.concatenate(seen), minlength=setup.bundle.n_items) + spec.model.smoothing
            with torch.no_grad():
                model.log_counts.copy_(torch.from_numpy(np.log(counts)).float())
            RF.append_metrics(run.out, {"step": 1, "epoch": 1, "loss": 0.0})
            sel = Selection(metric_name(spec.run.select_metric))
            valid = build_eval_samples(ds, "rec", "valid", 1, ctx)[: spec.run.select_users]
            if valid:
                metrics = rank_valid(setup, model, valid, sel.metric, device="cpu")
                record_validation(sel, 1, metrics, users=len(valid),
                                  write_line=lambda r: RF.append_metrics(run.out, {"step": 1, "epoch": 1, **r}),
                                  save_best=lambda: ckpt.write_best(run.out, trainable_state(model),
                                                                    sel.best_state(1, len(valid))),
                                  log=progress.log)
            ckpt.write_final(run.out, trainable_state(model), {"step": 1, "epoch": 1, "batch": 0,
                                                               "early_stopped": False})
        finally:
            reset_accelerate_state()
        return run.out


@pytest.fixture
def popular_family():
    register(NAME, PopularFamily(), PopularSpec)
    yield
    unregister(NAME)
    assert NAME not in FAMILIES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ask_server(port: int, answers: dict) -> None:
    """Wait until the server is ready, ask it, then stop it with SIGTERM (its handler is installed by then)."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as res:
                answers["health"] = json.loads(res.read())
                break
        except OSError:
            time.sleep(0.2)
    else:
        return
    try:
        body = json.dumps({"user": 0, "k": 3}).encode()
        request = urllib.request.Request(f"{base}/v1/recommend", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as res:
            answers["recommend"] = json.loads(res.read())
    finally:
        os.kill(os.getpid(), signal.SIGTERM)


def test_a_family_defined_here_runs_through_train_evaluate_generate_and_serve(popular_family, sample_ds, tmp_path, cli,
                                                                              one_thread):
    run, other = tmp_path / "popular", tmp_path / "sasrec"
    res = cli("train", "--data", sample_ds, "--model", NAME, "--out", run, "--dry-run")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["model"] == {"family": NAME, "smoothing": 1.0}
    res = cli("train", "--data", sample_ds, "--model", NAME, "--out", run)
    assert res.exit_code == 0, res.output
    assert "best checkpoint:" in res.output and RF.read_model_meta(run)["family"] == NAME
    res = cli("train", "--data", sample_ds, "--model", NAME, "--loss", "ce", "--out", tmp_path / "x", "--dry-run")
    assert res.exit_code == 1 and "--loss is a SASRec setting (--model sasrec)" in res.output

    res = cli("train", "--data", sample_ds, "--model", "sasrec", "--out", other, "--max-steps", "2", "--batch-size", "16")
    assert res.exit_code == 0, res.output
    res = cli("evaluate", "--run", run, "--compare", other, "--k", "5,10")
    assert res.exit_code == 0, res.output
    assert "NDCG@10" in res.output and "popularity" in res.output
    report = json.loads((run / "evaluations" / "best-test" / "metrics.json").read_text())
    assert report["model_family"] == NAME and report["tasks"]["rec"]["users"] > 0
    res = cli("evaluate", "--run", run, "--tasks", "exp")
    assert res.exit_code == 1 and f"a {NAME} run does rec only, not exp" in res.output

    res = cli("generate", "--run", run, "--task", "rec", "--user", "0", "-k", "3", "--json")
    assert res.exit_code == 0, res.output
    recs = json.loads(res.stdout)["recommendations"]
    assert len(recs) == 3 and [r["rank"] for r in recs] == [1, 2, 3]

    port, answers = _free_port(), {}
    loggers = {name: logging.getLogger(name) for name in ("unimp.serve", "aiohttp.access")}
    before = {name: (list(lg.handlers), lg.propagate, lg.level) for name, lg in loggers.items()}
    asker = threading.Thread(target=_ask_server, args=(port, answers), daemon=True)
    asker.start()
    try:
        res = cli("serve", "--run", run, "--port", port)
    finally:
        asker.join(timeout=60)
        for name, lg in loggers.items():
            lg.handlers[:], lg.propagate, lg.level = before[name]
    assert res.exit_code == 0, res.output
    assert answers["health"]["family"] == NAME and answers["health"]["tasks"] == ["recommend"]
    # the server answers as `unimp generate` does
    assert [r["item_id"] for r in answers["recommend"]["recommendations"]] == [r["item_id"] for r in recs]


def test_a_registered_family_needs_the_interface():
    from unimp_core.errors import UnimpError

    with pytest.raises(UnimpError, match="model family 'broken' lacks NAME, build, save, load, recipe, rank_scores"):
        register("broken", object(), PopularSpec)
    assert "broken" not in FAMILIES
