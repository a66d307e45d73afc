"""The JSON API's request bodies, its answers and its OpenAPI description (no torch, no aiohttp import).

Bodies are strict: unknown fields, wrong JSON types and out-of-range values are refused with the
field's name. Users and items are referred to as in `unimp generate`: an internal id (a number) or
the original key / source id (a string; `id:N`, `key:K`, `src:S` say which). The answer models are
the API's promise, published in the OpenAPI description (the fuzz test holds every answer to them).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..tokens import N_SLOTS

MAX_K = 1000
MAX_QUERY = 500  # characters
MAX_OFFSET = 10**9  # users; polars slices take an int64

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
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET, description="First user to list (in user id order).")
    limit: int = Field(default=100, ge=1, le=1000, description="How many users to list.")


# ------------------------------------------------------------------------------------------- answers


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a field the description does not name is a broken promise


class Item(Answer):
    item_id: int = Field(ge=0)
    source_id: str | None
    title: str
    category: str
    price: float | None
    image_url: str | None = Field(description="GET it for the item's picture; null when the item has none.")


class RankedItem(Item):
    rank: int = Field(ge=1)
    score: float | None = Field(ge=0, le=1, description="How sure the model is (see the answer's `score`); "
                                "null if not finite.")
    logit: float | None
    in_history: bool


class Candidate(Item):
    slot: int = Field(ge=0)
    selected: bool


class User(Answer):
    user_id: int | None
    user_key: str | None
    split: str | None
    unseen: bool = Field(description="True for a request that gave a history instead of a known user.")


class Asked(Answer):
    task: str
    checkpoint: str
    synthetic: bool = Field(description="True when the run's dataset is the synthetic sample.")
    user: User
    history: list[Item] = Field(description="The history items the prompt shows, oldest first.")
    history_total: int = Field(ge=0)


class Ranking(Asked):
    """The answer of /v1/recommend and /v1/search."""

    recommendations: list[RankedItem]
    score: str = Field(description="What `score` measures.")
    k_note: str | None = Field(default=None, description="Why fewer than k items are listed, if they are.")
    exclude_history: bool | None = Field(default=None, description="Whether the user's history items were left out.")
    query: str | None = None


class Explanation(Asked):
    """The answer of /v1/explain."""

    generated: str
    item: Item
    rating: int | None
    explanation: str


class Selection(Asked):
    """The answer of /v1/select."""

    generated: str
    candidates: list[Candidate]


class UserRow(Answer):
    user_id: int
    user_key: str
    split: str
    length: int = Field(ge=0)


class UsersPage(Answer):
    """The answer of /v1/users."""

    total: int = Field(ge=0)
    offset: int = Field(ge=0)
    users: list[UserRow]


class Health(Answer):
    """The answer of /healthz once the model is loaded."""

    status: Literal["ready"]
    checkpoint: str
    family: str | None
    tasks: list[str]
    items: int
    users: int
    synthetic: bool
    device: str


class NotReady(Answer):
    """The answer of /healthz while the model loads (or after it failed to)."""

    status: Literal["loading", "failed"]
    error: str | None


def validation_message(exc: ValidationError) -> tuple[str, str]:
    """(field, one-line message) of a request body's first validation error."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "body"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    return field, f"{field}: {msg}"


# ------------------------------------------------------------------------------------------- OpenAPI

# endpoint: (request body, answer (None: image/png), summary); POST /v1/<endpoint> answers the task whose
# `Task.endpoint` it is (`unimp_core.tasks.served_tasks`)
POSTS: dict[str, tuple[type[Asker], type[BaseModel] | None, str]] = {
    "recommend": (RecommendRequest, Ranking, "Recommendations: ranked items with scores, titles and image URLs."),
    "search": (SearchRequest, Ranking, "Search results for a query, ranked for the user."),
    "explain": (ExplainRequest, Explanation, "The predicted rating and explanation of an item."),
    "select": (SelectRequest, Selection, "The candidates the user would select."),
    "image": (ImageRequest, None, "A generated image (image/png)."),
}


def post_path(endpoint: str) -> str:
    return f"/v1/{endpoint}"


ERROR = {"$ref": "#/components/schemas/Error"}


def _content(media: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {media: {"schema": schema} if schema else {}}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def openapi(title: str = "unimp serve") -> dict[str, Any]:
    """The OpenAPI 3.1 description of the API (request and answer schemas from the pydantic models)."""
    from .. import __version__

    models: list[type[BaseModel]] = [Ranking, Explanation, Selection, UsersPage, Item, Health, NotReady]
    errors = {"4XX": {"description": "Refused: the error names the field", "content": _content("application/json", ERROR)},
              "503": {"description": "Loading, overloaded or timed out: retry after Retry-After seconds",
                      "content": _content("application/json", ERROR)}}
    paths: dict[str, Any] = {}
    for endpoint, (body, answer, summary) in POSTS.items():
        models.append(body)
        ok = _content("image/png") if answer is None else _content("application/json", _ref(answer))
        paths[post_path(endpoint)] = {"post": {
            "summary": summary, "description": (body.__doc__ or "").strip(),
            "requestBody": {"required": True, "content": _content("application/json", _ref(body))},
            "responses": {"200": {"description": "OK", "content": ok}, **errors}}}

    def get(summary: str, content: dict[str, Any], parameters: list[dict[str, Any]] | None = None,
            responses: dict[str, Any] | None = None) -> dict[str, Any]:
        op = {"summary": summary, "responses": {"200": {"description": "OK", "content": content}, **(responses or errors)}}
        return {"get": {**op, "parameters": parameters} if parameters else op}

    item_param = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
                   "description": "Item id or source id (id:N / src:S to be explicit)."}]
    query = UsersQuery.model_json_schema()["properties"]
    query_params = [{"name": n, "in": "query", "required": False, "description": f.description,
                     "schema": {k: v for k, v in query[n].items() if k in ("type", "minimum", "maximum", "default")}}
                    for n, f in UsersQuery.model_fields.items()]
    not_ready = {"503": {"description": "Loading (or failed to load): retry after Retry-After seconds",
                         "content": _content("application/json", _ref(NotReady))}}
    paths.update({
        "/v1/users": get("Users of the run's dataset (id, key, split, history length), paged.",
                         _content("application/json", _ref(UsersPage)), query_params),
        "/v1/items/{id}": get("One item: ids, title, category, price, image URL.",
                              _content("application/json", _ref(Item)), item_param),
        "/v1/items/{id}/image": get("The item's picture.", _content("image/*"), item_param),
        "/v1/openapi.json": get("This description.", _content("application/json", {"type": "object"})),
        "/healthz": get("200 once the model is loaded (503 while loading).", _content("application/json", _ref(Health)),
                        responses=not_ready),
        "/metrics": get("Prometheus metrics: requests, latency, batch sizes.", _content("text/plain", {"type": "string"})),
        "/": get("The web page: recommendations for a user, with pictures.", _content("text/html", {"type": "string"})),
    })
    schemas: dict[str, Any] = {"Error": {"type": "object", "required": ["error"], "additionalProperties": False, "properties": {
        "error": {"type": "string", "description": "One line saying what is wrong."},
        "field": {"type": ["string", "null"], "description": "The request field at fault, if any."}}}}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {"openapi": "3.1.0", "info": {"title": title, "version": __version__}, "paths": paths,
            "components": {"schemas": schemas, "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}}}
