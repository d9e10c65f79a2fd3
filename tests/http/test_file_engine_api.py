"""The Hybrid Chat file-engine API, in process: its own statuses and bodies."""

import hashlib
from collections.abc import Callable

import pytest

from tests.conftest import PDF_BYTES, png_bytes
from tests.http.conftest import Api

PNG = png_bytes()
UPLOAD = "/file-engine/api/uploadFileStream"
FAILED = "An error occurred while uploading file."


def test_upload_answers_in_the_published_shape(api: Api) -> None:
    response = api.client.post(
        UPLOAD, headers=api.auth, files={"file": ("pic.png", PNG)}, data={"conversationId": "c7"}
    )
    assert response.status_code == 200
    sha = hashlib.sha256(PNG).hexdigest()
    assert response.json() == {
        "message": "File uploaded successfully.",
        "etag": sha,
        "name": "c7_pic.png",
        "type": "image/png",
        "size": len(PNG),
    }
    assert response.headers["etag"] == f'"{sha}"'


def test_names_never_overwrite(api: Api) -> None:
    names = [
        api.upload(png_bytes(n + 1), "pic.png", UPLOAD, conversationId="c7")["name"]
        for n in range(3)
    ]
    assert names[0] == "c7_pic.png"
    assert len(set(names)) == 3
    for name in names[1:]:
        assert isinstance(name, str)
        assert name.startswith("c7_pic-")
        assert name.endswith(".png")
        assert len(name) - len("c7_pic.png") <= 32
    for n, name in enumerate(names):
        body = api.client.get("/file-engine/api/downloadFileStream", params={"filename": name})
        assert body.content == png_bytes(n + 1)


@pytest.mark.parametrize(
    ("files", "data", "code"),
    [
        ({"file": ("a.png", PNG)}, {}, "invalid_multipart"),
        (None, {"conversationId": "c1"}, "invalid_multipart"),
    ],
)
def test_client_mistakes_answer_404(
    api: Api, files: dict[str, object] | None, data: dict[str, str], code: str
) -> None:
    response = api.client.post(UPLOAD, headers=api.auth, files=files, data=data)
    assert response.status_code == 404
    body = response.json()
    assert body["message"] == FAILED
    assert body["error"]["code"] == code


def test_too_large_and_wrong_type_answer_404(make_api: Callable[..., Api]) -> None:
    api = make_api(max_upload_size="20")
    too_large = api.client.post(
        UPLOAD, headers=api.auth, files={"file": ("a.png", PNG)}, data={"conversationId": "c"}
    )
    assert too_large.status_code == 404
    assert too_large.json()["error"]["code"] == "file_too_large"
    api = make_api(allowed_types="image/*")
    wrong_type = api.client.post(
        UPLOAD, headers=api.auth, files={"file": ("a.pdf", PDF_BYTES)}, data={"conversationId": "c"}
    )
    assert wrong_type.status_code == 404
    assert wrong_type.json()["error"]["code"] == "unsupported_media_type"


def test_upload_needs_a_key(api: Api) -> None:
    response = api.client.post(UPLOAD, files={"file": ("a.png", PNG)}, data={"conversationId": "c"})
    assert response.status_code == 401


def test_download_needs_no_key_and_keeps_download_semantics(api: Api) -> None:
    api.upload(PNG, "pic.png", UPLOAD, conversationId="c1")
    url = "/file-engine/api/downloadFileStream"
    response = api.client.get(url, params={"filename": "c1_pic.png"})
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    partial = api.client.get(url, params={"filename": "c1_pic.png"}, headers={"Range": "bytes=0-3"})
    assert partial.status_code == 206
    assert partial.content == PNG[:4]
    missing = api.client.get(url, params={"filename": "c1_nope.png"})
    assert missing.status_code == 404
    assert api.client.get(url).status_code == 400


def test_stat(api: Api) -> None:
    api.upload(PNG, "pic.png", UPLOAD, conversationId="c1")
    url = "/file-engine/api/getFileStat"
    stat = api.client.get(url, params={"filename": "c1_pic.png"}, headers=api.auth).json()
    assert stat["name"] == "c1_pic.png"
    assert stat["type"] == "image/png"
    assert stat["size"] == len(PNG)
    assert stat["etag"] == hashlib.sha256(PNG).hexdigest()
    assert stat["lastModified"].endswith("Z")
    assert api.client.get(url, params={"filename": "c1_pic.png"}).status_code == 401


def test_both_faces_see_the_same_files(api: Api) -> None:
    compat = api.upload(PNG, "pic.png", UPLOAD, conversationId="c1")
    [listed] = api.client.get(
        "/v1/files", headers=api.auth, params={"conversationId": "c1"}
    ).json()["items"]
    assert listed["storedName"] == compat["name"]
    assert listed["conversationId"] == "c1"
    native = api.upload(png_bytes(3), "other.png")
    stat = api.client.get(
        "/file-engine/api/getFileStat", params={"filename": native["storedName"]}, headers=api.auth
    )
    assert stat.json()["size"] == native["size"]
    assert api.client.delete(f"/v1/files/{listed['id']}", headers=api.auth).status_code == 204
    gone = api.client.get("/file-engine/api/downloadFileStream", params={"filename": "c1_pic.png"})
    assert gone.status_code == 404
