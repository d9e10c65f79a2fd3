"""Import from URL and external files over HTTP, in process, against a local source."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.http.conftest import Api
from tests.sources import CLIENT_ID, CLIENT_SECRET, D360_KEY, PNG, SourceServer

OPEN_TO_LOOPBACK = {"import_allow_networks": "127.0.0.1/32", "import_ports": "1-65535"}
FAILED = "An error occurred while uploading file."


@pytest.fixture
def source() -> Iterator[SourceServer]:
    with SourceServer() as server:
        yield server


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api(import_read_timeout="1", **OPEN_TO_LOOPBACK)


def code(response: object) -> str:
    return str(response.json()["error"]["code"])  # type: ignore[attr-defined]


def test_import(api: Api, source: SourceServer) -> None:
    body = {"sourceUrl": source.url("/file.png"), "conversationId": "c1", "properties": {"k": 1}}
    response = api.client.post("/v1/files/import", headers=api.auth, json=body)
    assert response.status_code == 201, response.text
    file = response.json()
    assert (file["type"], file["storedName"], file["contentType"]) == (
        "HOSTED",
        "c1_file.png",
        "image/png",
    )
    assert file["properties"] == {"k": 1}
    assert response.headers["location"].endswith(f"/v1/files/{file['id']}")
    assert api.client.get(file["url"], headers=api.auth).content == PNG


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"sourceUrl": "ftp://example.com/x"}, 400, "invalid_source_url"),
        ({"sourceUrl": "http://a@127.0.0.1/"}, 400, "invalid_source_url"),
        # A missing, empty, blank or non-string URL is an invalid URL too.
        ({}, 400, "invalid_source_url"),
        ({"sourceUrl": 5}, 400, "invalid_source_url"),
        ({"sourceUrl": ""}, 400, "invalid_source_url"),
        ({"sourceUrl": "   "}, 400, "invalid_source_url"),
        ({"sourceUrl": None}, 400, "invalid_source_url"),
        ({"sourceUrl": ["http://example.com/"]}, 400, "invalid_source_url"),
        ({"sourceUrl": "http://127.0.0.2/x"}, 403, "destination_not_allowed"),
        ({"sourceUrl": "http://169.254.169.254/latest/meta-data/"}, 403, "destination_not_allowed"),
        ({"sourceUrl": "{source}/big"}, 413, "file_too_large"),
        ({"sourceUrl": "{source}/status/404"}, 502, "source_error"),
        ({"sourceUrl": "{source}/stall"}, 504, "source_timeout"),
        ({"sourceUrl": "{source}/file.png", "oauth": {"clientId": "x"}}, 400, "invalid_request"),
        ({"sourceUrl": "{source}/file.png", "headers": {"Host": "x"}}, 400, "invalid_request"),
    ],
)
def test_import_errors(
    api: Api, source: SourceServer, body: dict[str, object], status: int, error: str
) -> None:
    body = {k: v.format(source=source.base) if isinstance(v, str) else v for k, v in body.items()}
    response = api.client.post("/v1/files/import", headers=api.auth, json=body)
    assert (response.status_code, code(response)) == (status, error), response.text
    assert api.client.get("/v1/files", headers=api.auth).json()["items"] == []


def test_import_bodies_are_bounded(api: Api) -> None:
    huge = {"sourceUrl": "http://example.com/", "properties": {"x": "y" * 100_000}}
    response = api.client.post("/v1/files/import", headers=api.auth, json=huge)
    assert (response.status_code, code(response)) == (413, "request_too_large")
    response = api.client.post("/v1/files/import", headers=api.auth, content=b"{not json")
    assert (response.status_code, code(response)) == (400, "invalid_request")


def test_import_needs_a_key(api: Api, source: SourceServer) -> None:
    response = api.client.post("/v1/files/import", json={"sourceUrl": source.url("/file.png")})
    assert response.status_code == 401
    assert source.hits["/file.png"] == 0


def test_channel_profile_from_the_config_file(
    make_api: Callable[..., Api], tmp_path: Path, source: SourceServer
) -> None:
    (tmp_path / "chatmedia.toml").write_text(
        f"""
[channels.waba]
allowHosts = ["127.0.0.1"]
apiKey360 = "{D360_KEY}"

[channels.fb.oauth]
tokenUrl = "{source.url("/oauth/token")}"
clientId = "{CLIENT_ID}"
clientSecret = "{CLIENT_SECRET}"

[channels.elsewhere]
allowHosts = ["lookaside.example.com"]
"""
    )
    api = make_api(**OPEN_TO_LOOPBACK)
    post = api.client.post
    d360 = post(
        "/v1/files/import",
        headers=api.auth,
        json={"sourceUrl": source.url("/d360/media"), "channel": "waba"},
    )
    assert d360.status_code == 201, d360.text
    for _ in range(2):
        fb = post(
            "/v1/files/import",
            headers=api.auth,
            json={"sourceUrl": source.url("/protected"), "channel": "fb"},
        )
        assert fb.status_code == 201, fb.text
    assert source.hits["/oauth/token"] == 1
    # The request's own credentials win over the profile's.
    wrong = post(
        "/v1/files/import",
        headers=api.auth,
        json={"sourceUrl": source.url("/d360/media"), "channel": "waba", "apiKey360": "wrong"},
    )
    assert (wrong.status_code, code(wrong)) == (502, "source_error")
    assert "wrong" not in wrong.text
    elsewhere = post(
        "/v1/files/import",
        headers=api.auth,
        json={"sourceUrl": source.url("/file.png"), "channel": "elsewhere"},
    )
    assert (elsewhere.status_code, code(elsewhere)) == (403, "destination_not_allowed")
    config = api.client.get("/v1/config", headers=api.auth).json()
    assert D360_KEY not in json.dumps(config)


def test_file_engine_upload_from_url(api: Api, source: SourceServer) -> None:
    url = "/file-engine/api/uploadFileFromUrl"
    response = api.client.post(
        url,
        headers=api.auth,
        json={"sourceUrl": source.url("/file.png"), "channel": "whatsapp", "conversationId": "wa1"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "File uploaded successfully."
    assert (body["name"], body["type"], body["size"]) == ("wa1_file.png", "image/png", len(PNG))
    form = api.client.post(
        url,
        headers=api.auth,
        data={
            "sourceUrl": source.url("/d360/media"),
            "channel": "waba",
            "conversationId": "wa1",
            "fileName": "photo.png",
            "APIKey360": D360_KEY,
            "mime_type": "image/png",
        },
    )
    assert form.status_code == 200, form.text
    assert form.json()["name"] == "wa1_photo.png"
    token = api.client.post(
        url,
        headers=api.auth,
        data={
            "sourceUrl": source.url("/protected"),
            "channel": "fb",
            "oauth": json.dumps(
                {
                    "tokenUrl": source.url("/oauth/token"),
                    "clientId": CLIENT_ID,
                    "clientSecret": CLIENT_SECRET,
                }
            ),
        },
    )
    assert token.status_code == 200, token.text
    assert token.json()["type"] == "application/pdf"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"sourceUrl": "{source}/file.png"}, 404, "invalid_request"),  # no channel
        ({"channel": "c"}, 404, "invalid_source_url"),
        ({"sourceUrl": "", "channel": "c"}, 404, "invalid_source_url"),
        ({"sourceUrl": " ", "channel": "c"}, 404, "invalid_source_url"),
        ({"sourceUrl": "http://127.0.0.2/x", "channel": "c"}, 404, "destination_not_allowed"),
        ({"sourceUrl": "{source}/big", "channel": "c"}, 404, "file_too_large"),
        ({"sourceUrl": "{source}/status/500", "channel": "c"}, 500, "source_error"),
        ({"sourceUrl": "{source}/stall", "channel": "c"}, 500, "source_timeout"),
    ],
)
def test_file_engine_upload_from_url_errors(
    api: Api, source: SourceServer, body: dict[str, str], status: int, error: str
) -> None:
    body = {k: v.format(source=source.base) for k, v in body.items()}
    response = api.client.post("/file-engine/api/uploadFileFromUrl", headers=api.auth, json=body)
    assert response.status_code == status, response.text
    assert response.json()["message"] == FAILED
    assert response.json()["error"]["code"] == error


def test_external_files(api: Api) -> None:
    body = {
        "url": "https://cdn.example.com/media/clip.mp4?sig=abc",
        "name": "clip.mp4",
        "contentType": "video/mp4",
        "size": 1234,
        "conversationId": "c9",
        "properties": {"source": "crm"},
    }
    response = api.client.post("/v1/files/external", headers=api.auth, json=body)
    assert response.status_code == 201, response.text
    file = response.json()
    assert (file["type"], file["url"], file["sha256"]) == ("EXTERNAL", body["url"], None)
    assert (file["storedName"], file["contentType"], file["size"]) == (
        "c9_clip.mp4",
        "video/mp4",
        1234,
    )
    assert "etag" not in response.headers
    content = api.client.get(
        f"/v1/files/{file['id']}/content", headers=api.auth, follow_redirects=False
    )
    assert (content.status_code, content.headers["location"]) == (307, body["url"])
    compat = api.client.get(
        "/file-engine/api/downloadFileStream",
        params={"filename": "c9_clip.mp4"},
        follow_redirects=False,
    )
    assert (compat.status_code, compat.headers["location"]) == (307, body["url"])
    stat = api.client.get(
        "/file-engine/api/getFileStat", params={"filename": "c9_clip.mp4"}, headers=api.auth
    )
    assert stat.json()["etag"] is None
    listed = api.client.get("/v1/files", headers=api.auth, params={"conversationId": "c9"}).json()
    assert [f["id"] for f in listed["items"]] == [file["id"]]
    assert api.client.delete(f"/v1/files/{file['id']}", headers=api.auth).status_code == 204
    assert api.client.get(f"/v1/files/{file['id']}", headers=api.auth).status_code == 404


@pytest.mark.parametrize(
    "change",
    [
        {"url": "ftp://example.com/x"},
        {"url": "/relative"},
        {"contentType": "not a type"},
        {"contentType": "image/*"},
        {"size": -1},
        {"size": 2**63},
        {"size": True},
        {"size": "5"},
        {"size": 1.5},
    ],
)
def test_external_file_validation(api: Api, change: dict[str, object]) -> None:
    body = {"url": "https://cdn.example.com/a.png", "contentType": "image/png", "size": 1} | change
    response = api.client.post("/v1/files/external", headers=api.auth, json=body)
    assert response.status_code == 400, response.text
    assert code(response) in ("invalid_request", "invalid_source_url")


def test_external_files_obey_the_type_policy(make_api: Callable[..., Api]) -> None:
    api = make_api(blocked_types="text/html")
    body = {"url": "https://example.com/page.html", "contentType": "text/html", "size": 1}
    response = api.client.post("/v1/files/external", headers=api.auth, json=body)
    assert (response.status_code, code(response)) == (415, "unsupported_media_type")


def test_imports_obey_the_tenants_quotas(
    make_api: Callable[..., Api], source: SourceServer
) -> None:
    api = make_api(quota_bytes=str(len(PNG) - 1), **OPEN_TO_LOOPBACK)
    body = {"sourceUrl": source.url("/file.png")}
    response = api.client.post("/v1/files/import", headers=api.auth, json=body)
    assert response.status_code == 403, response.text
    assert code(response) == "quota_exceeded"
    assert "maxBytes" in response.json()["error"]["message"]
    usage = api.client.get("/v1/usage", headers=api.auth).json()
    assert (usage["bytes"], usage["files"], usage["reserved"]) == (0, 0, {"bytes": 0, "files": 0})
    engine = api.client.post(
        "/file-engine/api/uploadFileFromUrl",
        headers=api.auth,
        json=body | {"conversationId": "c", "channel": "web"},
    )
    assert engine.status_code == 404  # the file-engine's convention
    assert engine.json()["error"]["code"] == "quota_exceeded"
