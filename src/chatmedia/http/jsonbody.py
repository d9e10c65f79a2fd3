"""Small request bodies (JSON, or a urlencoded form for the file-engine API), read with a
size cap and validated by a pydantic model. Read here rather than by FastAPI, which would
read a body of any size into memory before validating it."""

from __future__ import annotations

import json
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from chatmedia.errors import BadRequest, RequestTooLarge

MAX_BODY = 64 * 1024
M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request) -> dict[str, Any]:
    """A JSON object, or a urlencoded form when the request says so; at most 64 KiB."""
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise RequestTooLarge(f"the request body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        try:
            return dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError:
            raise BadRequest("the form is not UTF-8") from None
    try:
        value = json.loads(body)
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("the request body must be a JSON object")
    return value


def validate(model: type[M], data: dict[str, Any]) -> M:
    """`data` as `model`; raises BadRequest naming each field and problem (never a value).

    A field whose own error the API documents (a model's `FIELD_ERRORS`, by the field's
    path in the body, e.g. "sourceUrl" or "file.url") gets that error for any malformed
    value, missing, empty or of the wrong type included."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False, include_input=False)
        field_errors: dict[str, type[BadRequest]] = getattr(model, "FIELD_ERRORS", {})
        for error in errors:
            path = ".".join(str(p) for p in error["loc"])
            if path in field_errors:
                raise field_errors[path](f"{path}: {error['msg']}") from None
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
            for error in errors
        )
        raise BadRequest(problems) from None


def json_body_doc(model: type[BaseModel], *parameters: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI for a route that reads `model` itself (and takes the header `parameters`)."""
    schema = model.model_json_schema(by_alias=True)
    body = {"required": True, "content": {"application/json": {"schema": schema}}}
    return {"requestBody": body, "parameters": list(parameters)}
