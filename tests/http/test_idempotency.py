"""Idempotency-Key on the creating POSTs, in process: retries get the first answer and create
nothing new."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx2 as httpx  # what starlette.testclient answers with
import pytest
from starlette.types import Message, Receive, Scope, Send

from chatmedia.access.principal import DEFAULT_TENANT
from chatmedia.db.idempotency import IdempotencyKeys, IdempotencyRecord
from chatmedia.http.idempotency import IdempotencyMiddleware
from chatmedia.http.request_hash import RequestHasher
from chatmedia.http.responses import error_response
from chatmedia.pipelines.keys import KeySpec, create_key
from chatmedia.storage import StagedBlob
from chatmedia.storage.local import LocalBlobStore
from tests.conftest import png_bytes
from tests.http.conftest import Api

PNG = png_bytes()
OTHER_PNG = png_bytes(5, 5)
EXTERNAL = {
    "url": "https://cdn.example.com/clip.mp4",
    "name": "clip.mp4",
    "contentType": "video/mp4",
    "size": 10,
}


def form(data: bytes = PNG, boundary: str | None = None, **fields: str) -> tuple[bytes, str]:
    """A multipart body with a random boundary (as clients make one for every request) and
    its content type."""
    boundary = boundary or secrets.token_hex(16)
    parts = [
        f'Content-Disposition: form-data; name="{k}"\r\n\r\n{v}'.encode() for k, v in fields.items()
    ]
    file_head = 'Content-Disposition: form-data; name="file"; filename="a.png"\r\n'
    parts.append(f"{file_head}Content-Type: image/png\r\n\r\n".encode() + data)
    delimiter = b"--" + boundary.encode()
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts) + delimiter + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary}"


def post_form(
    api: Api,
    key: str | bytes | None,
    data: bytes = PNG,
    path: str = "/v1/files",
    secret: str | None = None,
    boundary: str | None = None,
    **fields: str,
) -> httpx.Response:
    body, content_type = form(data, boundary, **fields)
    headers: dict[str, str | bytes] = {
        "Authorization": f"Bearer {secret or api.key}",
        "Content-Type": content_type,
    }
    if key is not None:
        headers["Idempotency-Key"] = key
    return api.client.post(path, content=body, headers=headers)


def post_json(api: Api, key: str, body: dict[str, Any]) -> httpx.Response:
    headers = api.auth | {"Idempotency-Key": key}
    return api.client.post("/v1/files/external", json=body, headers=headers)


def file_count(api: Api) -> int:
    return len(api.client.get("/v1/files", headers=api.auth).json()["items"])


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def record_of(api: Api, key: str, secret: str | None = None) -> IdempotencyRecord | None:
    async def get() -> IdempotencyRecord | None:
        async with api.services.db.read() as conn:
            return await IdempotencyKeys(conn).get(scope_of(secret or api.key), key)

    return api.client.portal.call(get)  # type: ignore[union-attr]


def scope_of(secret: str, tenant: str = DEFAULT_TENANT) -> str:
    return hashlib.sha256(f"Bearer {secret}\0{tenant}".encode()).hexdigest()


def test_a_retry_with_a_new_boundary_gets_the_first_answer(api: Api) -> None:
    first = post_form(api, "k1", boundary="----WebKitFormBoundaryA1", conversationId="c1")
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    retry = post_form(api, "k1", boundary="----WebKitFormBoundaryZ9", conversationId="c1")
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content
    for name in ("content-type", "etag", "location", "content-length"):
        assert retry.headers[name] == first.headers[name]
    assert retry.headers["x-content-type-options"] == "nosniff"  # outer middleware still ran
    assert file_count(api) == 1


def test_the_same_key_with_another_request_is_refused(api: Api) -> None:
    assert post_form(api, "k1").status_code == 201
    for response in (
        post_form(api, "k1", data=OTHER_PNG),
        post_form(api, "k1", conversationId="c2"),
        post_form(api, "k1", path="/file-engine/api/uploadFileStream", conversationId="c1"),
    ):
        assert response.status_code == 422
        assert error_code(response) == "idempotency_key_reused"
    assert file_count(api) == 1


def test_without_the_header_every_request_creates(api: Api) -> None:
    assert post_form(api, None).status_code == 201
    assert post_form(api, None).status_code == 201
    assert file_count(api) == 2


def test_requests_without_a_valid_api_key_are_left_to_the_app(api: Api) -> None:
    body, content_type = form()
    headers = {"Idempotency-Key": "k1", "Content-Type": content_type}
    assert api.client.post("/v1/files", content=body, headers=headers).status_code == 401
    response = post_form(api, "k1", secret="cm_not-a-key")
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"
    assert record_of(api, "k1", secret="cm_not-a-key") is None
    # Even an invalid Idempotency-Key: authentication comes first.
    assert post_form(api, "bad key", secret="cm_not-a-key").status_code == 401


def test_each_api_key_has_its_own_keys(api: Api) -> None:
    _, second = api.client.portal.call(create_key, api.services, KeySpec("second"))  # type: ignore[union-attr]
    first = post_form(api, "shared")
    other = post_form(api, "shared", secret=second)
    assert first.status_code == other.status_code == 201
    assert "idempotent-replayed" not in other.headers
    assert first.json()["id"] != other.json()["id"]
    assert post_form(api, "shared", secret=second).headers["idempotent-replayed"] == "true"
    assert file_count(api) == 2


@pytest.mark.parametrize("key", ["", "a b", "x" * 256, "caf\u00e9".encode(), "tab\there", "\x7f"])
def test_invalid_keys_are_refused(api: Api, key: str | bytes) -> None:
    response = post_form(api, key)
    assert response.status_code == 400
    assert error_code(response) == "invalid_idempotency_key"
    assert file_count(api) == 0


def test_two_keys_in_one_request_are_refused(api: Api) -> None:
    body, content_type = form()
    headers = [
        ("Authorization", f"Bearer {api.key}"),
        ("Content-Type", content_type),
        ("Idempotency-Key", "a"),
        ("Idempotency-Key", "b"),
    ]
    response = api.client.post("/v1/files", content=body, headers=headers)
    assert response.status_code == 400
    assert error_code(response) == "invalid_idempotency_key"


def test_the_longest_key_is_accepted(api: Api) -> None:
    key = "~" + "K" * 253 + "!"
    assert post_form(api, key).status_code == 201
    assert post_form(api, key).headers["idempotent-replayed"] == "true"


@pytest.mark.parametrize("path", ["/v1/files", "/file-engine/api/uploadFileStream"])
def test_a_server_fault_is_not_kept(api: Api, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing_promote(_self: LocalBlobStore, _staged: StagedBlob) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(LocalBlobStore, "promote", failing_promote)
    assert post_form(api, "k1", path=path, conversationId="c1").status_code == 500
    assert record_of(api, "k1") is None
    monkeypatch.undo()
    retry = post_form(api, "k1", path=path, conversationId="c1")
    assert retry.status_code in (200, 201)
    assert "idempotent-replayed" not in retry.headers
    assert file_count(api) == 1


def test_the_file_engine_upload_replays(api: Api) -> None:
    path = "/file-engine/api/uploadFileStream"
    first = post_form(api, "fe", path=path, conversationId="wa-1")
    assert first.status_code == 200
    retry = post_form(api, "fe", path=path, conversationId="wa-1")
    assert retry.status_code == 200
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content
    assert retry.headers["etag"] == first.headers["etag"]
    assert file_count(api) == 1


def test_a_refused_upload_is_kept_like_any_client_error(make_api: Callable[..., Api]) -> None:
    api = make_api(max_upload_size="1KiB")
    big = PNG + bytes(2048)  # a PNG with trailing bytes, past the limit
    first = post_form(api, "k1", data=big)
    assert first.status_code == 413
    assert error_code(first) == "file_too_large"
    retry = post_form(api, "k1", data=big)
    assert retry.status_code == 413
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content


def test_the_json_route(api: Api) -> None:
    first = post_json(api, "ext", EXTERNAL)
    assert first.status_code == 201
    assert first.json()["type"] == "EXTERNAL"
    retry = post_json(api, "ext", EXTERNAL)
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content
    assert retry.headers["location"] == first.headers["location"]
    reused = post_json(api, "ext", EXTERNAL | {"name": "other.mp4"})
    assert reused.status_code == 422
    assert error_code(reused) == "idempotency_key_reused"
    assert file_count(api) == 1


def test_a_bad_request_is_kept_too(api: Api) -> None:
    first = post_json(api, "bad", {"url": "not a url"})
    assert first.status_code == 400
    retry = post_json(api, "bad", {"url": "not a url"})
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content


def plant(api: Api, key: str, created_at: datetime, answer: tuple[str, int, bytes] | None) -> None:
    """A record made `created_at`: in progress, or completed with (hash, status, body)."""

    async def insert() -> None:
        async with api.services.db.write() as conn:
            keys = IdempotencyKeys(conn)
            scope = scope_of(api.key)
            assert await keys.claim(
                scope, key, created_at, expired_before=created_at, stale_before=created_at
            )
            if answer is not None:
                request_hash, status, body = answer
                headers = [("content-type", "application/json")]
                assert await keys.complete(
                    scope,
                    key,
                    created_at,
                    request_hash=request_hash,
                    status=status,
                    headers=headers,
                    body=body,
                    now=created_at,
                )

    api.client.portal.call(insert)  # type: ignore[union-attr]


def test_an_answer_older_than_a_day_is_ignored(api: Api) -> None:
    body, content_type = form(boundary="fixed")
    hasher = RequestHasher("POST", "/v1/files", b"", content_type)
    hasher.update(body)
    # Replayed while young: the planted hash is the request's.
    plant(api, "young", datetime.now(UTC) - timedelta(hours=23), (hasher.hexdigest(), 201, b"{}"))
    headers = api.auth | {"Content-Type": content_type}
    young = api.client.post(
        "/v1/files", content=body, headers=headers | {"Idempotency-Key": "young"}
    )
    assert (young.status_code, young.content) == (201, b"{}")
    # Ignored once older than 24 hours: the request runs and its answer replaces the old.
    plant(api, "old", datetime.now(UTC) - timedelta(hours=25), (hasher.hexdigest(), 201, b"{}"))
    old = api.client.post("/v1/files", content=body, headers=headers | {"Idempotency-Key": "old"})
    assert old.status_code == 201
    assert "idempotent-replayed" not in old.headers
    assert old.json()["size"] == len(PNG)
    assert file_count(api) == 1
    record = record_of(api, "old")
    assert record is not None
    assert record.body == old.content


def test_a_request_in_progress_holds_its_key_for_an_hour(api: Api) -> None:
    plant(api, "running", datetime.now(UTC) - timedelta(minutes=59), None)
    response = post_form(api, "running")
    assert response.status_code == 409
    assert error_code(response) == "idempotency_key_in_progress"
    # A claim older than that was left by a crash.
    plant(api, "crashed", datetime.now(UTC) - timedelta(hours=2), None)
    assert post_form(api, "crashed").status_code == 201


def test_a_retry_while_the_first_is_running_gets_409(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    promote = LocalBlobStore.promote

    async def held_promote(self: LocalBlobStore, staged: StagedBlob) -> None:
        entered.set()
        await anyio.to_thread.run_sync(release.wait)
        await promote(self, staged)

    monkeypatch.setattr(LocalBlobStore, "promote", held_promote)
    with ThreadPoolExecutor(1) as pool:
        try:
            first = pool.submit(post_form, api, "k1")
            assert entered.wait(10)
            second = post_form(api, "k1")
        finally:
            release.set()
        assert first.result().status_code == 201
    assert second.status_code == 409
    assert error_code(second) == "idempotency_key_in_progress"
    assert post_form(api, "k1").headers["idempotent-replayed"] == "true"
    assert file_count(api) == 1


def test_simultaneous_requests_create_one_file(api: Api) -> None:
    rounds = 4
    for n in range(rounds):
        barrier = threading.Barrier(2)

        def send(key: str = f"race{n}", barrier: threading.Barrier = barrier) -> httpx.Response:
            barrier.wait()
            return post_form(api, key)

        with ThreadPoolExecutor(2) as pool:
            responses = [f.result() for f in [pool.submit(send), pool.submit(send)]]
        created = [
            r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
        ]
        assert len(created) == 1
        (other,) = (r for r in responses if r is not created[0])
        assert other.status_code == 409 or other.headers["idempotent-replayed"] == "true"
    assert file_count(api) == rounds


def test_metrics_count_replays_and_refusals_by_route(api: Api) -> None:
    post_form(api, "k1")
    post_form(api, "k1")
    post_form(api, "k1", data=OTHER_PNG)
    text = api.client.get("/metrics").text
    assert 'chatmedia_http_requests_total{method="POST",route="/v1/files",status="201"} 2.0' in text
    assert 'chatmedia_http_requests_total{method="POST",route="/v1/files",status="422"} 1.0' in text


# The middleware alone, with a body in many messages (the test client sends one).


def asgi_exchange(
    api: Api, app: IdempotencyMiddleware, key: str, chunks: list[bytes], leave: bool = False
) -> tuple[list[Message], int]:
    """Send `chunks` as one request; `leave`: the client goes away after them. Returns the
    messages sent back and how many chunks were left unread."""
    incoming: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": leave or n < len(chunks) - 1}
        for n, chunk in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/upload",
        "query_string": b"",
        "headers": [
            (b"authorization", f"Bearer {api.key}".encode()),
            (b"idempotency-key", key.encode()),
            (b"content-type", b"application/octet-stream"),
        ],
    }
    api.client.portal.call(app, scope, receive, send)  # type: ignore[union-attr]
    return sent, len(incoming)


def test_an_early_answer_is_kept_for_the_whole_body(api: Api) -> None:
    calls = 0

    async def early_413(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal calls
        calls += 1
        await receive()  # the first chunk only, as an upload over the limit stops
        await error_response(413, "file_too_large", "too large")(scope, receive, send)

    app = IdempotencyMiddleware(early_413, services=api.services, routes=[("POST", "/upload")])
    body = bytes(range(256)) * 40
    sent, unread = asgi_exchange(api, app, "k1", [body[:1000], body[1000:5000], body[5000:]])
    assert (calls, unread) == (1, 0)  # drained after the app answered
    assert sent[0]["status"] == 413
    assert sent[-1] == {"type": "http.response.body", "body": b""}
    answer = b"".join(m.get("body", b"") for m in sent[1:])

    replay, _ = asgi_exchange(api, app, "k1", [body[:10], body[10:]])
    assert calls == 1
    assert replay[0]["status"] == 413
    assert (b"idempotent-replayed", b"true") in replay[0]["headers"]
    assert replay[1]["body"] == answer

    reused, _ = asgi_exchange(api, app, "k1", [body[:10]])  # the same start, shorter
    assert reused[0]["status"] == 422
    assert calls == 1


def test_a_client_that_leaves_before_its_body_ends_frees_the_key(api: Api) -> None:
    calls = 0

    async def reads_one(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal calls
        calls += 1
        await receive()
        await error_response(413, "file_too_large", "too large")(scope, receive, send)

    app = IdempotencyMiddleware(reads_one, services=api.services, routes=[("POST", "/upload")])
    sent, _ = asgi_exchange(api, app, "k1", [b"a" * 10, b"b" * 10], leave=True)
    assert sent[0]["status"] == 413
    assert record_of(api, "k1") is None
    asgi_exchange(api, app, "k1", [b"a" * 10, b"b" * 10])
    assert calls == 2
    record = record_of(api, "k1")
    assert record is not None
    assert record.status == 413
