"""A loaded run answering API requests.

Requests are resolved on the event loop (users, items, the prompt: cheap, and every mistake is a
4xx naming the field); the model runs in one thread, through `unimp generate`'s own functions
(`generation.prepare`, `generation.rank_items`, `generation.answer`), so a served answer is the one
`unimp generate` gives for the same user.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from ..errors import UnimpError
from ..generation import Prepared, answer, answer_ranked, prepare, resolve_items, resolve_user
from ..specs.evaluate import GenerateSpec
from ..specs.serve import ServeSpec
from ..tasks import get_task, served_tasks
from .api import Asker, ExplainRequest, ImageRequest, RecommendRequest, SearchRequest, SelectRequest


class ApiError(Exception):
    """A request the server refuses: HTTP status, one-line message, the field at fault (if any)."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}


class Engine:
    """The run's model and dataset, with the lookups the API needs."""

    def __init__(self, loaded, spec: ServeSpec):
        self.loaded, self.spec = loaded, spec
        ds = loaded.dataset
        self.items = ds.items.sort("item_id")
        self.users = ds.users.sort("user_id").select("user_id", "user_key", "split", "length")
        self.tasks = list(loaded.train_spec.data.tasks)
        self.n_items = self.items.height

    @classmethod
    def load(cls, spec: ServeSpec, progress=None) -> "Engine":
        """Load the run's model (on `spec.device`, default cuda if available)."""
        import torch

        from ..evaluation.runner import with_checkpoint
        from ..model.setup import load_run

        spec, chosen = with_checkpoint(spec)  # the same default as evaluate and generate: best, else final
        if chosen:
            logging.getLogger("unimp.serve").info("weights: %s", chosen)
        device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
        loaded = load_run(spec.run, spec.checkpoint, spec.data, device=device, history_len=spec.history_len,
                          max_tokens=spec.max_tokens, progress=progress)
        engine = cls(loaded, spec)
        engine.warm_up()
        return engine

    def warm_up(self) -> None:
        """One forward pass before the first request (the first one pays for lazy initialisation)."""
        task = served_tasks().get("recommend")
        if task in self.tasks and self.users.height:
            first = self.users["user_id"][0]
            self.rank([self.ask(task, RecommendRequest(user=int(first), k=1))])

    def info(self) -> dict[str, Any]:
        ds = self.loaded.dataset
        return {"checkpoint": self.loaded.checkpoint, "family": getattr(self.loaded.setup.family, "NAME", None),
                "tasks": self.endpoints(), "items": self.n_items,
                "users": self.users.height, "synthetic": bool(ds.manifest.get("synthetic", False)),
                "device": str(self.loaded.device)}

    def endpoints(self) -> list[str]:
        """What the run answers: the endpoints of its tasks, in training order."""
        return [e for e in (get_task(t).endpoint for t in self.tasks) if e is not None]

    # ----------------------------------------------------------------------------------- lookups

    def item_ids(self, refs: list[int | str], field: str, status: int = 422) -> list[int]:
        try:
            return resolve_items(self.items, [str(r) for r in refs], field)
        except UnimpError as exc:
            raise ApiError(status, str(exc), field) from None

    def item(self, ref: str) -> dict[str, Any]:
        """GET /v1/items/{id}: the item's row with its image URL (404 if unknown)."""
        from ..generation import item_row

        return self.present_item(item_row(self.items, self.item_ids([ref], "id", status=404)[0]))

    def image_path(self, ref: str):
        """The item's picture on disk (404 if the item or its picture is missing)."""
        from ..io import safe_join

        item = self.item_ids([ref], "id", status=404)[0]
        rel = self.items["image"][item]
        root = self.loaded.dataset.root
        try:
            path = safe_join(root, rel) if rel and root is not None else None
        except UnimpError:
            path = None
        if path is None or not path.is_file():
            raise ApiError(404, f"id {ref}: item {item} has no picture", "id")
        return path

    def present_item(self, row: dict[str, Any]) -> dict[str, Any]:
        """An item row as the API shows it: the dataset-relative image path becomes a URL."""
        row = dict(row)
        rel = row.pop("image", None)
        row["image_url"] = f"/v1/items/{row['item_id']}/image" if rel else None
        return row

    def present(self, result: dict[str, Any]) -> dict[str, Any]:
        """A generation result as the API shows it (no server paths)."""
        out = {k: v for k, v in result.items() if k not in ("run", "dataset")}
        for key in ("history", "recommendations", "candidates"):
            if key in out:
                out[key] = [self.present_item(r) for r in out[key]]
        if "item" in out:
            out["item"] = self.present_item(out["item"])
        return out

    # ---------------------------------------------------------------------------------- requests

    def ask(self, task: str, body: Asker) -> Prepared:
        """Resolve a request into `unimp generate`'s prepared question (ApiError names the bad field)."""
        if task not in self.tasks:
            raise ApiError(404, f"this run was not trained for {get_task(task).endpoint} ({task}); it answers: "
                                f"{', '.join(self.endpoints())}")
        fields: dict[str, Any] = {"run": self.loaded.run, "checkpoint": self.loaded.checkpoint, "task": task,
                                  "history_len": self.spec.history_len, "max_new_tokens": self.spec.max_new_tokens}
        if body.user is not None:
            try:
                uid = resolve_user(self.users, str(body.user), self.loaded.run, option="user",
                                   hint="list them with GET /v1/users")
            except UnimpError as exc:
                raise ApiError(422, str(exc), "user") from None
            fields["user"] = f"id:{uid}"
        else:
            if len(body.history) > self.spec.max_history:
                raise ApiError(422, f"history: {len(body.history)} items, at most {self.spec.max_history}", "history")
            fields["history"] = [f"id:{i}" for i in self.item_ids(body.history, "history")]
        if isinstance(body, RecommendRequest):  # and SearchRequest
            fields.update(k=body.k, exclude_history=body.exclude_history)
        if isinstance(body, (SearchRequest, ImageRequest)):
            fields["query"] = body.query
        if isinstance(body, ExplainRequest):
            fields["item"] = f"id:{self.item_ids([body.item], 'item')[0]}"
        if isinstance(body, SelectRequest):
            fields["candidates"] = [f"id:{i}" for i in self.item_ids(body.candidates, "candidates")]
        try:
            return prepare(self.loaded, GenerateSpec(**fields), self.items)
        except UnimpError as exc:  # e.g. an empty history
            raise ApiError(422, str(exc), "user" if body.user is not None else "history") from None

    def rank(self, batch: list[Prepared]) -> list[dict[str, Any]]:
        """rec / search for many requests: one collated batch, one forward pass (model thread)."""
        return [self.present(r) for r in answer_ranked(self.loaded, batch, self.items)]

    def answer(self, p: Prepared) -> dict[str, Any]:
        """explain / select / image for one request (model thread)."""
        try:
            result = answer(self.loaded, p.spec, p, self.items)
        except UnimpError as exc:  # e.g. the run has no image codes
            raise ApiError(404, str(exc)) from None
        if "image" in result:
            uri = result["image"].pop("data_uri")
            result["png"] = base64.b64decode(uri.split(",", 1)[1])
        return self.present(result)
