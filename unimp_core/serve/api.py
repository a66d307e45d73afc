"""The JSON API's request bodies and its OpenAPI description (no torch, no aiohttp import).

Bodies are strict: unknown fields, wrong JSON types and out-of-range values are refused with the
field's name. Users and items are referred to as in `unimp generate`: an internal id (a number) or
the original key / source id (a string; `id:N`, `key:K`, `src:S` say which).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..tokens import N_SLOTS

MAX_K = 1000
MAX_QUERY = 500  # characters

UserRef = int | str
ItemRef = int | str


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Asker(Body):
    """Whose taste: a known user, or the history of a user the model has never seen."""

    user: UserRef | None = Field(default=None, description="A known user: internal user id or original user key "
                                 "(id:N / key:K to be explicit).")
    history: list[ItemRef] | None = Field(default=None, min_length=1, description="Items of an unseen user, oldest "
                                          "first: item ids or source ids (id:N / src:S to be explicit).")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.user is None) == (self.history is None):
            raise ValueError("give either user (a known user) or history (items of an unseen user), not both or none")
        return self


class RecommendRequest(Asker):
    """POST /v1/recommend: the next items for a user, ranked over the whole catalogue."""

    k: int = Field(default=10, ge=1, le=MAX_K, description="How many items to list.")
    exclude_history: bool = Field(default=True, description="Leave the user's history items out (the default; "
                                  "false lists them too).")


class SearchRequest(RecommendRequest):
    """POST /v1/search: items for a text query, ranked for this user."""

    query: str = Field(min_length=1, max_length=MAX_QUERY, description="The search query.")


class ExplainRequest(Asker):
    """POST /v1/explain: the rating and explanation the user would give an item."""

    item: ItemRef = Field(description="The item to rate and explain (item id or source id).")


class SelectRequest(Asker):
    """POST /v1/select: which of the pictured candidates the user takes."""

    candidates: list[ItemRef] = Field(min_length=2, max_length=N_SLOTS,
                                      description=f"2 to {N_SLOTS} candidate items (item ids or source ids).")


class ImageRequest(Asker):
    """POST /v1/image: an image for a query in the user's taste (PNG); runs trained with img_gen only."""

    query: str = Field(min_length=1, max_length=MAX_QUERY, description="What to picture.")


class UsersQuery(Body):
    """GET /v1/users query parameters."""

    model_config = ConfigDict(extra="forbid", strict=False)  # query strings are text: "10" is 10
    offset: int = Field(default=0, ge=0, description="First user to list (in user id order).")
    limit: int = Field(default=100, ge=1, le=1000, description="How many users to list.")


def validation_message(exc: ValidationError) -> tuple[str, str]:
    """(field, one-line message) of a request body's first validation error."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "body"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    return field, f"{field}: {msg}"


# ------------------------------------------------------------------------------------------- OpenAPI

POSTS = {
    "/v1/recommend": (RecommendRequest, "rec", "Recommendations: ranked items with scores, titles and image URLs."),
    "/v1/search": (SearchRequest, "search", "Search results for a query, ranked for the user."),
    "/v1/explain": (ExplainRequest, "exp", "The predicted rating and explanation of an item."),
    "/v1/select": (SelectRequest, "img_sel", "The candidates the user would select."),
    "/v1/image": (ImageRequest, "img_gen", "A generated image (image/png)."),
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi(title: str = "unimp serve") -> dict[str, Any]:
    """The OpenAPI 3.1 description of the API (request schemas from the pydantic models)."""
    from .. import __version__

    schemas: dict[str, Any] = {"Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string", "description": "One line saying what is wrong."},
        "field": {"type": ["string", "null"], "description": "The request field at fault, if any."}}}}
    errors = {"4XX": _error_response("Bad request: the error names the field"),
              "503": _error_response("Loading, overloaded or timed out: retry after Retry-After seconds")}
    paths: dict[str, Any] = {}
    for path, (model, task, summary) in POSTS.items():
        name = model.__name__
        schemas[name] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        ok = ({"content": {"image/png": {}}} if task == "img_gen" else {"content": {"application/json": {}}})
        paths[path] = {"post": {
            "summary": summary, "description": (model.__doc__ or "").strip(),
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}},
            "responses": {"200": {"description": "OK", **ok}, **errors}}}
    get = lambda summary, **extra: {"get": {"summary": summary, "responses": {"200": {"description": "OK"}, **errors}, **extra}}  # noqa: E731
    item_param = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
                   "description": "Item id or source id (id:N / src:S to be explicit)."}]
    query_params = [{"name": n, "in": "query", "required": False, "schema": {"type": "integer"}, "description": f.description}
                    for n, f in UsersQuery.model_fields.items()]
    paths.update({
        "/v1/users": get("Users of the run's dataset (id, key, split, history length), paged.", parameters=query_params),
        "/v1/items/{id}": get("One item: ids, title, category, price, image URL.", parameters=item_param),
        "/v1/items/{id}/image": get("The item's picture.", parameters=item_param),
        "/v1/openapi.json": get("This description."),
        "/healthz": get("200 once the model is loaded (503 while loading)."),
        "/metrics": get("Prometheus metrics: requests, latency, batch sizes."),
    })
    return {"openapi": "3.1.0", "info": {"title": title, "version": __version__}, "paths": paths,
            "components": {"schemas": schemas, "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}}}
