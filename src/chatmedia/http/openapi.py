"""The OpenAPI document, kept true to what the server does.

Routes state what they answer with `answers(...)`: the success and its shape, and each
error class they can raise (its status, with the error codes in the description). What
every route shares is added here once, when the document is first built: 400
`invalid_request` where there are parameters or a body to validate, 401 where a key is
needed, 503 `backend_unavailable` wherever the database or the store is used. FastAPI's
422 is removed (validation errors answer 400), and the schemas pydantic nests under
`$defs` are moved to `components/schemas`, so every reference resolves.
schemathesis holds the document to this in `make test` (tests/e2e/test_openapi.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from chatmedia.access.principal import TENANT_PATTERN
from chatmedia.errors import (
    BackendUnavailable,
    BadRequest,
    ChatMediaError,
    MissingScope,
    RateLimited,
    TenantNotAllowed,
    Unauthorized,
)
from chatmedia.http.shapes import Error, Event, FileEngineError

BINARY = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
# Each event of a stream, as the HTML standard's server-sent events frame it.
EVENT_STREAM = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "required": ["id", "event", "data"],
            "properties": {
                "id": {"type": "string", "description": "Resume after it with Last-Event-ID"},
                "event": {"type": "string", "description": "The event's type"},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": "#/components/schemas/Event"},
                },
            },
        }
    }
}
LOCATION = {"Location": {"description": "The new resource", "schema": {"type": "string"}}}
STREAM_TOKEN = {
    "type": "apiKey",
    "in": "query",
    "name": "token",
    "description": "The signed token of POST /v1/conversations/{conversationId}/events/token",
}
SIGNED_LINK = {
    "type": "apiKey",
    "in": "query",
    "name": "sig",
    "description": "A signed link's signature, with its exp, disp, g and kid parameters",
}
# Any keyed operation takes it (chatmedia.http.deps).
TENANT = {
    "name": "tenant",
    "in": "query",
    "required": False,
    "description": "An admin key without a tenant of its own acts in this tenant",
    "schema": {"type": "string", "pattern": TENANT_PATTERN},
}
FILE_ENGINE_PREFIX = "/file-engine/"
_TEXT = {"schema": {"type": "string"}}
# What a 429 says of the limit (chatmedia.fairuse.limiter); admitted answers carry the
# last two as well.
RATE_LIMIT_HEADERS = {
    "Retry-After": {"description": "Seconds to wait", **_TEXT},
    "RateLimit-Policy": {"description": 'The limit: "key";q=2000;w=2', **_TEXT},
    "RateLimit": {"description": 'What is left of it: "key";r=0;t=1', **_TEXT},
}
# Routes that touch neither the database nor the store.
_NO_BACKEND = frozenset({"/healthz", "/metrics"})
_REF_PREFIX = "#/$defs/"


def answers(
    *errors: type[ChatMediaError],
    ok: type[BaseModel] | dict[str, Any] | None = None,
    status: int = 200,
    headers: dict[str, Any] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """FastAPI's `responses` for a route: `status` with the body `ok` (a model, or OpenAPI
    `content`), and each error by its status."""
    responses: dict[int | str, dict[str, Any]] = {}
    if ok is not None or headers:
        success: dict[str, Any] = {"description": "Success"}
        if isinstance(ok, dict):
            success["content"] = ok
        elif ok is not None:
            success["model"] = ok
        if headers:
            success["headers"] = headers
        responses[status] = success
    for error in errors:
        _list_code(responses.setdefault(error.status, {"model": Error}), error)
    return responses


def install_openapi(app: FastAPI) -> None:
    """Build the document once, on first request, with what every route shares added."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _finish(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _finish(document: dict[str, Any]) -> dict[str, Any]:
    components = document.setdefault("components", {})
    schemes = components.setdefault("securitySchemes", {})
    schemes |= {"streamToken": STREAM_TOKEN, "signedLink": SIGNED_LINK}
    schemas = components.setdefault("schemas", {})
    for model in (Error, FileEngineError, Event):
        schema = model.model_json_schema(ref_template=_REF_PREFIX + "{model}")
        schemas.setdefault(model.__name__, schema)
    _hoist_defs(document, schemas)
    for path, operations in document["paths"].items():
        for operation in operations.values():
            keyed = any("apiKey" in choice for choice in operation.get("security", []))
            if keyed:
                operation.setdefault("parameters", []).append(TENANT)
            for parameter in operation.get("parameters", []):
                _not_null(parameter["schema"])
            responses = operation.setdefault("responses", {})
            if responses.get("422", {}).get("description") == "Validation Error":
                del responses["422"]  # FastAPI's; validation errors answer 400
            if operation.get("parameters") or operation.get("requestBody"):
                _add(responses, BadRequest)
            if operation.get("security"):
                _add(responses, Unauthorized)
            if any(
                scopes for choice in operation.get("security", []) for scopes in choice.values()
            ):
                _add(responses, MissingScope)
            if keyed:
                _add(responses, TenantNotAllowed)
            if operation.get("security") or path.startswith(FILE_ENGINE_PREFIX):
                file_engine = path.startswith(FILE_ENGINE_PREFIX)
                _add(responses, RateLimited, "FileEngineError" if file_engine else "Error")
                responses["429"]["headers"] = RATE_LIMIT_HEADERS
            # A route that answers its own way to server faults (the file-engine's 500) has
            # them documented already.
            if path not in _NO_BACKEND and "500" not in responses:
                _add(responses, BackendUnavailable)
    _rewrite_refs(document)
    return document


def _not_null(schema: dict[str, Any]) -> None:
    """A parameter is absent or a value: never `null` (FastAPI's `T | None`)."""
    choices = schema.get("anyOf")
    if choices is not None:
        schema["anyOf"] = [c for c in choices if c != {"type": "null"}]
        if len(schema["anyOf"]) == 1:
            schema |= schema.pop("anyOf")[0]


def _add(responses: dict[str, Any], error: type[ChatMediaError], shape: str = "Error") -> None:
    """Document `error` in a built document's `responses` beside what its status lists."""
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/" + shape}}}
    _list_code(responses.setdefault(str(error.status), {"content": error_body}), error)


def _list_code(entry: dict[str, Any], error: type[ChatMediaError]) -> None:
    """Name the error's code in the description of its status (codes, comma-separated)."""
    codes = [c for c in entry.get("description", "").split(", ") if c]
    entry["description"] = ", ".join(dict.fromkeys([*codes, error.code]))


def _hoist_defs(node: Any, schemas: dict[str, Any]) -> None:
    """Move every nested `$defs` into components/schemas (pydantic puts a body model's
    sub-models there, where no reference from elsewhere in the document resolves)."""
    for child in _children(node):
        if isinstance(child, dict) and "$defs" in child:
            for name, schema in child.pop("$defs").items():
                schemas.setdefault(name, schema)
                _hoist_defs(schema, schemas)
        _hoist_defs(child, schemas)


def _rewrite_refs(node: Any) -> None:
    for child in _children(node):
        if isinstance(child, dict):
            ref = child.get("$ref")
            if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
                child["$ref"] = "#/components/schemas/" + ref.removeprefix(_REF_PREFIX)
        _rewrite_refs(child)


def _children(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        yield from list(node.values())
    elif isinstance(node, list):
        yield from node
