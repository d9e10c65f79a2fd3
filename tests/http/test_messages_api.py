"""Messages and webhooks over HTTP, in process."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmedia.pipelines.messages import own_file_reference
from chatmedia.pipelines.webhooks import signature
from tests.conftest import PDF_BYTES, png_bytes, unsigned
from tests.http.conftest import Api

PNG = png_bytes()
BASE = "http://127.0.0.1:8080"


def messages_url(conversation: str = "c1") -> str:
    return f"/v1/conversations/{conversation}/messages"


def post(api: Api, body: dict[str, object], conversation: str = "c1") -> dict[str, object]:
    response = api.client.post(messages_url(conversation), headers=api.auth, json=body)
    assert response.status_code == 201, response.text
    assert response.headers["location"].endswith(f"/messages/{response.json()['id']}")
    message: dict[str, object] = response.json()
    return message


def test_text_message(api: Api) -> None:
    message = post(api, {"type": "TEXT", "body": "hello", "groupTag": "g", "properties": {"a": 1}})
    fields = "id conversationId type body file groupTag properties sender createdAt"
    assert set(message) == set(fields.split())
    assert (message["type"], message["body"], message["file"]) == ("TEXT", "hello", None)
    assert (message["groupTag"], message["properties"]) == ("g", {"a": 1})
    sender = message["sender"]
    assert isinstance(sender, dict)
    assert (sender["type"], sender["name"]) == ("API_KEY", "tests")
    assert post(api, {"body": "no type given"})["type"] == "TEXT"


def test_media_message_for_a_stored_file(api: Api) -> None:
    file = api.upload(PNG, "photo.png", conversationId="c1")
    message = post(api, {"fileId": file["id"], "body": "look"})
    assert message["type"] == "IMAGE"
    assert message["body"] == "look"
    assert unsigned(message["file"]) == unsigned(file)
    pdf = api.upload(PDF_BYTES, "doc.pdf")
    assert post(api, {"fileId": pdf["id"]})["type"] == "FILE"
    assert post(api, {"fileId": pdf["id"], "type": "VIDEO"})["type"] == "VIDEO"


def test_media_message_for_an_external_file(api: Api) -> None:
    external = {
        "url": "https://cdn.example.com/v.mp4",
        "name": "v.mp4",
        "contentType": "video/mp4",
        "size": 99,
    }
    message = post(api, {"file": external})
    assert message["type"] == "VIDEO"
    file = message["file"]
    assert isinstance(file, dict)
    assert (file["type"], file["url"], file["conversationId"]) == (
        "EXTERNAL",
        external["url"],
        "c1",
    )


def test_hybrid_chat_media_url(api: Api) -> None:
    stored = api.upload(PNG, "p.png", "/file-engine/api/uploadFileStream", conversationId="c1")
    [hosted] = api.client.get("/v1/files", headers=api.auth).json()["items"]
    by_name = post(
        api,
        {
            "mediaUrl": f"{BASE}/file-engine/api/downloadFileStream?filename={stored['name']}",
            "caption": "hi",
        },
    )
    assert by_name["file"] == hosted
    assert by_name["body"] == "hi"
    by_id = post(api, {"mediaUrl": hosted["url"]})
    assert by_id["file"] == hosted
    elsewhere = post(
        api,
        {
            "mediaUrl": "https://lookaside.example.com/m/1",
            "mimeType": "audio/ogg",
            "fileName": "voice.ogg",
            "size": 5,
        },
    )
    file = elsewhere["file"]
    assert isinstance(file, dict)
    assert (elsewhere["type"], file["type"], file["name"], file["contentType"]) == (
        "AUDIO",
        "EXTERNAL",
        "voice.ogg",
        "audio/ogg",
    )


def test_multipart_message(api: Api) -> None:
    response = api.client.post(
        messages_url("c2"),
        headers=api.auth,
        files={"file": ("clip.png", PNG)},
        data={"body": "caption", "groupTag": "t", "properties": '{"k": "v"}'},
    )
    assert response.status_code == 201, response.text
    message = response.json()
    assert (message["type"], message["body"], message["groupTag"], message["properties"]) == (
        "IMAGE",
        "caption",
        "t",
        {"k": "v"},
    )
    assert message["file"]["conversationId"] == "c2"
    assert api.client.get(message["file"]["url"], headers=api.auth).content == PNG


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"fileId": "nope"}, 404, "file_not_found"),
        ({"mediaUrl": f"{BASE}/v1/files/nope/content"}, 404, "file_not_found"),
        ({}, 400, "invalid_request"),
        ({"type": "IMAGE", "body": "no file"}, 400, "invalid_request"),
        ({"type": "SOUND", "body": "x"}, 400, "invalid_request"),
        ({"fileId": "a", "mediaUrl": "https://example.com/x"}, 400, "invalid_request"),
        (
            {"file": {"url": "ftp://x/y", "contentType": "image/png", "size": 1}},
            400,
            "invalid_source_url",
        ),
    ],
)
def test_bad_messages_create_nothing(
    api: Api, body: dict[str, object], status: int, code: str
) -> None:
    response = api.client.post(messages_url(), headers=api.auth, json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert api.client.get(messages_url(), headers=api.auth).json()["items"] == []
    assert api.client.get("/v1/files", headers=api.auth).json()["items"] == []


def test_listing_is_newest_first_and_stable(api: Api) -> None:
    ids = [post(api, {"body": f"m{n}"})["id"] for n in range(7)]
    post(api, {"body": "elsewhere"}, "other")
    page = api.client.get(messages_url(), headers=api.auth, params={"limit": 3}).json()
    seen = [m["id"] for m in page["items"]]
    post(api, {"body": "new"})  # arriving between pages must not shift them
    while page["nextCursor"]:
        page = api.client.get(
            messages_url(), headers=api.auth, params={"limit": 3, "before": page["nextCursor"]}
        ).json()
        seen += [m["id"] for m in page["items"]]
    assert seen == ids[::-1]


def test_get_and_delete(api: Api) -> None:
    file = api.upload(PNG, "a.png", conversationId="c1")
    message = post(api, {"fileId": file["id"]})
    url = f"{messages_url()}/{message['id']}"
    assert api.client.get(url, headers=api.auth).json() == message
    assert (
        api.client.get(f"{messages_url('c9')}/{message['id']}", headers=api.auth).status_code == 404
    )
    assert api.client.delete(url, headers=api.auth).status_code == 204
    assert api.client.get(url, headers=api.auth).json()["error"]["code"] == "message_not_found"
    assert (
        api.client.get(f"/v1/files/{file['id']}", headers=api.auth).status_code == 200
    )  # file stays
    second = post(api, {"fileId": file["id"]})
    deleted = api.client.delete(
        f"{messages_url()}/{second['id']}", headers=api.auth, params={"deleteFile": "true"}
    )
    assert deleted.status_code == 204
    assert api.client.get(f"/v1/files/{file['id']}", headers=api.auth).status_code == 404


def test_a_message_outlives_its_file(api: Api) -> None:
    file = api.upload(PNG, "a.png")
    message = post(api, {"fileId": file["id"]})
    api.client.delete(f"/v1/files/{file['id']}", headers=api.auth)
    assert (
        api.client.get(f"{messages_url()}/{message['id']}", headers=api.auth).json()["file"] is None
    )


def test_idempotent_message_posts(api: Api) -> None:
    headers = api.auth | {"Idempotency-Key": "retry-1"}
    first = api.client.post(messages_url(), headers=headers, json={"body": "once"})
    again = api.client.post(messages_url(), headers=headers, json={"body": "once"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = api.client.post(messages_url(), headers=headers, json={"body": "different"})
    assert (other.status_code, other.json()["error"]["code"]) == (422, "idempotency_key_reused")
    assert len(api.client.get(messages_url(), headers=api.auth).json()["items"]) == 1


def test_messages_need_a_key(api: Api) -> None:
    assert api.client.post(messages_url(), json={"body": "x"}).status_code == 401
    assert api.client.get(messages_url()).status_code == 401
    assert api.client.get("/v1/events").status_code == 401
    assert api.client.get("/v1/conversations/c1/events").status_code == 401
    assert (
        api.client.get("/v1/conversations/c1/events", params={"token": "forged.sig"}).status_code
        == 401
    )


def test_stream_tokens(api: Api) -> None:
    response = api.client.post("/v1/conversations/c1/events/token", headers=api.auth)
    assert response.status_code == 200
    url = response.json()["url"]
    assert url.startswith(f"{BASE}/v1/conversations/c1/events?token=")
    token = url.split("token=")[1]
    other = api.client.get("/v1/conversations/c2/events", params={"token": token})
    assert (other.status_code, other.json()["error"]["code"]) == (401, "unauthorized")
    # A different character, always (a fixed replacement would leave the token valid, and
    # the stream open forever, whenever the signature had it already), and not the last
    # one, whose low bits base64 decoding ignores.
    forged = token[:-10] + ("B" if token[-10] == "A" else "A") + token[-9:]
    tampered = api.client.get("/v1/conversations/c1/events", params={"token": forged})
    assert tampered.status_code == 401


def test_webhooks(make_api: Callable[..., Api]) -> None:
    api = make_api(import_allow_networks="127.0.0.1/32", import_ports="1-65535")
    refused = api.client.post(
        "/v1/webhooks", headers=api.auth, json={"url": "http://10.0.0.1/hook"}
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (
        403,
        "destination_not_allowed",
    )
    created = api.client.post(
        "/v1/webhooks",
        headers=api.auth,
        json={"url": "http://127.0.0.1:9/hook", "events": ["message.created"]},
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"].startswith("whsec_")
    assert hook["events"] == ["message.created"]
    listed = api.client.get("/v1/webhooks", headers=api.auth).json()["items"]
    assert [h["id"] for h in listed] == [hook["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in api.client.get(f"/v1/webhooks/{hook['id']}", headers=api.auth).json()
    post(api, {"body": "queued"})
    deliveries = api.client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=api.auth).json()[
        "items"
    ]
    assert [d["eventType"] for d in deliveries] == ["message.created"]
    bad = api.client.post(
        "/v1/webhooks", headers=api.auth, json={"url": "http://127.0.0.1:9/", "events": ["nope"]}
    )
    assert bad.status_code == 400
    short = api.client.post(
        "/v1/webhooks", headers=api.auth, json={"url": "http://127.0.0.1:9/", "secret": "short"}
    )
    assert short.status_code == 400
    assert api.client.delete(f"/v1/webhooks/{hook['id']}", headers=api.auth).status_code == 204
    assert api.client.get(f"/v1/webhooks/{hook['id']}", headers=api.auth).status_code == 404


@given(st.text(min_size=16, max_size=64), st.integers(0, 2**40), st.binary(max_size=200))
def test_signatures_verify_as_documented(secret: str, timestamp: int, body: bytes) -> None:
    header = signature(secret, timestamp, body)
    parts = dict(item.split("=", 1) for item in header.split(","))
    assert parts["t"] == str(timestamp)
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"{BASE}/v1/files/abc/content", {"file_id": "abc"}),
        (
            f"{BASE}/file-engine/api/downloadFileStream?filename=c1_a.png",
            {"stored_name": "c1_a.png"},
        ),
        ("https://elsewhere.example/v1/files/abc/content", None),
        (f"{BASE}/v1/files/abc", None),
        (f"{BASE}/file-engine/api/downloadFileStream", None),
    ],
)
def test_own_file_references(url: str, expected: dict[str, str] | None) -> None:
    assert own_file_reference(BASE, url) == expected
