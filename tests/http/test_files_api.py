"""The native /v1 API, in process."""

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import HTML_BYTES, PDF_BYTES, png_bytes
from tests.http.conftest import Api

PNG = png_bytes()


def error_code(response: object) -> str:
    code: str = response.json()["error"]["code"]  # type: ignore[attr-defined]
    return code


def test_upload_answers_a_file(api: Api) -> None:
    response = api.client.post(
        "/v1/files",
        headers=api.auth,
        files={"file": ("photo.png", PNG, "application/pdf")},
        data={"conversationId": "c1", "properties": '{"a": 1}', "channel": "whatsapp"},
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "id", "type", "name", "storedName", "contentType", "size", "url", "sha256",
        "conversationId", "properties", "createdAt", "media",
    }  # fmt: skip
    # An image, described before the upload answers (chatmedia.media.inline).
    media = body["media"]
    assert (media["processing"], media["width"], media["height"]) == ("done", 4, 4)
    assert [p["size"] for p in media["previews"]] == [320, 800]
    assert body["type"] == "HOSTED"
    assert body["name"] == "photo.png"
    assert body["storedName"] == "c1_photo.png"
    assert body["contentType"] == "image/png"  # from the bytes, not the part's header
    assert body["size"] == len(PNG)
    assert body["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert body["properties"] == {"a": 1, "channel": "whatsapp"}
    content_url = f"http://127.0.0.1:8080/v1/files/{body['id']}/content"
    assert body["url"].startswith(content_url + "?exp=")  # signed: it needs no header
    assert "&sig=" in body["url"]
    assert len(body["id"]) >= 16
    assert response.headers["etag"] == f'"{body["sha256"]}"'
    assert response.headers["location"] == f"http://127.0.0.1:8080/v1/files/{body['id']}"
    assert api.client.get(f"/v1/files/{body['id']}", headers=api.auth).json() == body


def test_name_part_overrides_and_is_sanitized(api: Api) -> None:
    assert api.upload(PNG, filename="C:\\tmp\\x.png")["name"] == "x.png"
    body = api.upload(PNG, filename="x.png", name="../../evil\u202egnp.exe")
    assert body["name"] == "evilgnp.exe"
    assert body["properties"] == {}


@pytest.mark.parametrize(
    ("properties", "code"), [("{not json", "invalid_properties"), ("[1]", "invalid_properties")]
)
def test_bad_properties(api: Api, properties: str, code: str) -> None:
    response = api.client.post(
        "/v1/files", headers=api.auth, files={"file": ("a", PNG)}, data={"properties": properties}
    )
    assert response.status_code == 400
    assert error_code(response) == code
    assert api.client.get("/v1/files", headers=api.auth).json()["items"] == []


def test_ids_are_random(api: Api) -> None:
    ids = {api.upload(PNG)["id"] for _ in range(5)}
    assert len(ids) == 5


def test_listing_pages_newest_first(api: Api) -> None:
    uploaded = [api.upload(png_bytes(n + 1, 1), conversationId="c1")["id"] for n in range(5)]
    api.upload(PNG, conversationId="other")
    seen: list[object] = []
    cursor = None
    while True:
        params = {"conversationId": "c1", "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.client.get("/v1/files", headers=api.auth, params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == uploaded[::-1]


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 5000}, {"limit": "x"}, {"cursor": "bogus!"}]
)
def test_listing_rejects_bad_parameters(api: Api, params: dict[str, object]) -> None:
    response = api.client.get("/v1/files", headers=api.auth, params=params)
    assert response.status_code == 400
    assert error_code(response) in ("invalid_request", "invalid_cursor")


def test_content_headers_for_passive_types(api: Api) -> None:
    file = api.upload(PNG, filename="ph\u00f6to.png")
    response = api.client.get(f"/v1/files/{file['id']}/content", headers=api.auth)
    assert response.status_code == 200
    assert response.content == PNG
    h = response.headers
    assert h["content-type"] == "image/png"
    assert h["content-length"] == str(len(PNG))
    assert h["etag"] == f'"{file["sha256"]}"'
    assert h["accept-ranges"] == "bytes"
    assert h["x-content-type-options"] == "nosniff"
    assert h["content-security-policy"] == "sandbox"
    assert h["content-disposition"] == (
        "inline; filename=\"photo.png\"; filename*=UTF-8''ph%C3%B6to.png"
    )
    assert "last-modified" in h


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (HTML_BYTES, "text/html"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>x()</script></svg>', "image/svg+xml"),
        (PDF_BYTES, "application/pdf"),
    ],
)
def test_active_types_are_attachments(api: Api, data: bytes, content_type: str) -> None:
    file = api.upload(data, filename="innocent.png")
    response = api.client.get(f"/v1/files/{file['id']}/content", headers=api.auth)
    assert response.headers["content-type"] == content_type
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["content-security-policy"] == "sandbox"


def test_ranges_and_conditionals(api: Api) -> None:
    data = bytes(range(256)) * 100
    file = api.upload(data, filename="data.bin")
    url = f"/v1/files/{file['id']}/content"
    get = api.client.get
    partial = get(url, headers=api.auth | {"Range": "bytes=10-19"})
    assert partial.status_code == 206
    assert partial.content == data[10:20]
    assert partial.headers["content-range"] == f"bytes 10-19/{len(data)}"
    assert partial.headers["content-length"] == "10"
    suffix = get(url, headers=api.auth | {"Range": "bytes=-5"})
    assert suffix.content == data[-5:]
    unsatisfiable = get(url, headers=api.auth | {"Range": f"bytes={len(data)}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{len(data)}"
    assert error_code(unsatisfiable) == "range_not_satisfiable"
    for ignored in ("bytes=5-2", "bytes=0-1,4-5", "bytes=" + ",".join(["1-2"] * 500), "lines=1-2"):
        whole = get(url, headers=api.auth | {"Range": ignored})
        assert whole.status_code == 200
        assert whole.content == data
    etag = partial.headers["etag"]
    assert get(url, headers=api.auth | {"If-None-Match": etag}).status_code == 304
    modified = partial.headers["last-modified"]
    assert get(url, headers=api.auth | {"If-Modified-Since": modified}).status_code == 304
    still = get(url, headers=api.auth | {"Range": "bytes=0-0", "If-Range": etag})
    assert still.status_code == 206
    changed = get(url, headers=api.auth | {"Range": "bytes=0-0", "If-Range": '"other"'})
    assert changed.status_code == 200
    assert changed.content == data
    failed = get(url, headers=api.auth | {"If-Match": '"other"'})
    assert failed.status_code == 412
    assert error_code(failed) == "precondition_failed"


def test_head(api: Api) -> None:
    file = api.upload(PNG)
    response = api.client.head(f"/v1/files/{file['id']}/content", headers=api.auth)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(PNG))


def test_delete(api: Api) -> None:
    file = api.upload(PNG)
    assert api.client.delete(f"/v1/files/{file['id']}", headers=api.auth).status_code == 204
    for path in (f"/v1/files/{file['id']}", f"/v1/files/{file['id']}/content"):
        response = api.client.get(path, headers=api.auth)
        assert response.status_code == 404
        assert error_code(response) == "file_not_found"
    assert api.client.delete(f"/v1/files/{file['id']}", headers=api.auth).status_code == 404


def test_missing_blob_is_a_clean_500(api: Api) -> None:
    file = api.upload(PNG)
    blob = api.services.settings.blob_dir
    digest = str(file["sha256"])
    (blob / digest[:2] / digest[2:4] / digest).unlink()
    response = api.client.get(f"/v1/files/{file['id']}/content", headers=api.auth)
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "the server failed to handle the request"}
    }


def test_client_config(make_api: Callable[..., Api]) -> None:
    api = make_api(max_upload_size="20MB", allowed_types="image/*,pdf", blocked_types="svg")
    assert api.client.get("/v1/config", headers=api.auth).json() == {
        "maxUploadSize": 20_000_000,
        "allowedTypes": ["image/*", "application/pdf"],
        "blockedTypes": ["image/svg+xml"],
    }


def test_type_policy(make_api: Callable[..., Api]) -> None:
    api = make_api(allowed_types="image/*", blocked_types="image/gif")
    response = api.client.post("/v1/files", headers=api.auth, files={"file": ("a.png", PDF_BYTES)})
    assert response.status_code == 415
    assert error_code(response) == "unsupported_media_type"
    assert "application/pdf" in response.json()["error"]["message"]
    assert api.upload(PNG)["contentType"] == "image/png"


def test_size_limit(make_api: Callable[..., Api], tmp_path: Path) -> None:
    api = make_api(max_upload_size="1000")
    body = bytes(1000)
    assert api.upload(body)["size"] == 1000
    response = api.client.post("/v1/files", headers=api.auth, files={"file": ("a", body + b"!")})
    assert response.status_code == 413
    assert error_code(response) == "file_too_large"
    staging = api.services.settings.blob_dir / ".staging"
    assert list(staging.iterdir()) == []


@pytest.mark.parametrize(
    ("headers", "content", "status", "code"),
    [
        ({"Content-Type": "application/json"}, b"{}", 400, "invalid_multipart"),
        ({}, b"", 400, "invalid_multipart"),
        (
            {"Content-Type": "multipart/form-data; boundary=b"},
            b"junk" * 100,
            400,
            "invalid_multipart",
        ),
        (
            {"Content-Type": "multipart/form-data; boundary=b"},
            b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n' + b"y" * 300_000,
            413,
            "field_too_large",
        ),
        (  # a filename in Latin-1, not UTF-8: the client's mistake, not a 500
            {"Content-Type": "multipart/form-data; boundary=b"},
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="\xe9.png"\r\n\r\n'
            + PNG
            + b"\r\n--b--\r\n",
            400,
            "invalid_multipart",
        ),
    ],
)
def test_bad_bodies(
    api: Api, headers: dict[str, str], content: bytes, status: int, code: str
) -> None:
    response = api.client.post("/v1/files", headers=api.auth | headers, content=content)
    assert response.status_code == status
    assert error_code(response) == code


def test_auth(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": api.key}):
        response = api.client.get("/v1/files", headers=headers)
        assert response.status_code == 401
        assert error_code(response) == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    response = api.client.post("/v1/files", files={"file": ("a", PNG)})
    assert response.status_code == 401
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/metrics").status_code == 200


def test_unknown_routes_answer_json(api: Api) -> None:
    response = api.client.get("/nope")
    assert response.status_code == 404
    assert error_code(response) == "not_found"
    response = api.client.put("/v1/files", headers=api.auth)
    assert response.status_code == 405
    assert error_code(response) == "method_not_allowed"


def test_openapi_and_docs(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert "/v1/files" in spec["paths"]
    assert "/file-engine/api/uploadFileStream" in spec["paths"]
    assert "multipart/form-data" in spec["paths"]["/v1/files"]["post"]["requestBody"]["content"]
    assert api.client.get("/docs").status_code == 200


def test_metrics_count_traffic(api: Api) -> None:
    file = api.upload(PNG)
    api.client.get(f"/v1/files/{file['id']}/content", headers=api.auth)
    api.client.get(f"/v1/files/{file['id']}/content")
    api.client.head("/file-engine/api/downloadFileStream", params={"filename": file["storedName"]})
    text = api.client.get("/metrics").text
    assert 'chatmedia_http_requests_total{method="POST",route="/v1/files",status="201"} 1.0' in text
    # Downloads are answered outside FastAPI's router (http/shortcut.py), labelled alike.
    for method, route, status in (
        ("GET", "/v1/files/{file_id}/content", 200),
        ("GET", "/v1/files/{file_id}/content", 401),
        ("HEAD", "/file-engine/api/downloadFileStream", 200),
    ):
        labels = f'method="{method}",route="{route}",status="{status}"'
        assert f"chatmedia_http_requests_total{{{labels}}} 1.0" in text
    assert 'chatmedia_upload_duration_seconds_count{status="201"} 1.0' in text
    assert 'chatmedia_download_duration_seconds_count{status="200"} 2.0' in text
    sent = next(
        line for line in text.splitlines() if line.startswith("chatmedia_http_sent_bytes_total")
    )
    assert float(sent.split()[1]) >= len(PNG)
