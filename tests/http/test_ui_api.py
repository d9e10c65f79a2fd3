"""The agent's media page, in process: its links, what a page token may do on the API, and
the headers of the page (the page itself is driven in Chromium by tests/e2e/test_ui.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import png_bytes
from tests.http.conftest import Api

BASE = "http://127.0.0.1:8080"


def page_token(api: Api, conversation: str = "c1", **rights: Any) -> str:
    answer = api.client.post(
        f"/v1/conversations/{conversation}/ui-links", headers=api.auth, json=rights
    )
    assert answer.status_code == 201, answer.text
    url = answer.json()["url"]
    assert url.startswith(f"{BASE}/ui/conversations/{conversation}#token=cmpage_")
    return str(url.split("#token=")[1])


def test_a_read_only_page_token_reads_its_conversation_and_nothing_else(api: Api) -> None:
    mine = api.upload(png_bytes(), conversationId="c1")
    other = api.upload(png_bytes(5, 5), conversationId="c2")
    auth = {"Authorization": f"Bearer {page_token(api)}"}
    listed = api.client.get("/v1/files", params={"conversationId": "c1"}, headers=auth)
    assert [f["id"] for f in listed.json()["items"]] == [mine["id"]]
    everything = api.client.get("/v1/files", headers=auth).json()["items"]
    assert [f["id"] for f in everything] == [mine["id"]]
    assert api.client.get(f"/v1/files/{other['id']}", headers=auth).status_code == 404
    assert api.client.get("/v1/conversations/c1/messages", headers=auth).status_code == 200
    upload = api.client.post(
        "/v1/files",
        headers=auth,
        files={"file": ("a.png", png_bytes())},
        data={"conversationId": "c1"},
    )
    assert (upload.status_code, upload.json()["error"]["code"]) == (403, "missing_scope")
    deleted = api.client.delete(f"/v1/files/{mine['id']}", headers=auth)
    assert (deleted.status_code, deleted.json()["error"]["code"]) == (403, "missing_scope")
    sent = api.client.post("/v1/conversations/c1/messages", headers=auth, json={"body": "x"})
    assert sent.status_code == 403
    keys = api.client.get("/v1/keys", headers=auth)
    assert keys.status_code == 403


def test_rights_granted_work_only_in_the_conversation(api: Api) -> None:
    token = page_token(api, canUpload=True, canDelete=True, canSend=True)
    auth = {"Authorization": f"Bearer {token}"}
    file = api.client.post(
        "/v1/files",
        headers=auth,
        files={"file": ("a.png", png_bytes())},
        data={"conversationId": "c1"},
    )
    assert file.status_code == 201, file.text
    elsewhere = api.client.post(
        "/v1/files",
        headers=auth,
        files={"file": ("a.png", png_bytes())},
        data={"conversationId": "c2"},
    )
    assert elsewhere.json()["error"]["code"] == "conversation_not_allowed"
    message = api.client.post(
        "/v1/conversations/c1/messages",
        headers=auth,
        json={"fileId": file.json()["id"], "caption": "here"},
    )
    assert message.status_code == 201, message.text
    assert (
        api.client.post("/v1/conversations/c2/messages", headers=auth, json={"body": "x"}).json()[
            "error"
        ]["code"]
        == "conversation_not_allowed"
    )
    assert api.client.delete(f"/v1/files/{file.json()['id']}", headers=auth).status_code == 204


def test_forged_tokens_are_refused_and_counted(make_api: Callable[..., Api]) -> None:
    api = make_api(auth_failure_limit="3")
    token = page_token(api)
    forged = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    for _ in range(3):
        answer = api.client.get("/v1/files", headers={"Authorization": f"Bearer {forged}"})
        assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthorized")
    locked = api.client.get("/v1/files", headers={"Authorization": f"Bearer {forged}"})
    assert locked.status_code == 429


def test_links_need_the_scopes_they_grant(api: Api) -> None:
    created = api.client.post(
        "/v1/keys",
        headers=api.auth,
        json={"name": "reader", "scopes": ["files:read", "messages:read", "events:read"]},
    )
    reader = {"Authorization": f"Bearer {created.json()['key']}"}
    assert (
        api.client.post("/v1/conversations/c1/ui-links", headers=reader, json={}).status_code == 201
    )
    refused = api.client.post(
        "/v1/conversations/c1/ui-links", headers=reader, json={"canUpload": True}
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "missing_scope")
    too_long = api.client.post(
        "/v1/conversations/c1/ui-links", headers=api.auth, json={"expiresIn": 8 * 86400}
    )
    assert too_long.status_code == 400
    assert api.client.post("/v1/conversations/c1/ui-links", json={}).status_code == 401


def test_the_page_escapes_the_conversation_and_sends_strict_headers(
    make_api: Callable[..., Api],
) -> None:
    api = make_api()
    page = api.client.get("/ui/conversations/%3Cscript%3Ealert(1)%3C%5Cscript%3E%22")
    assert page.status_code == 200
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(1)&lt;\\script&gt;&quot;" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-frame-options"] == "DENY"
    framed = make_api(ui_frame_ancestors="https://desk.example.com").client.get(
        "/ui/conversations/c1"
    )
    assert "frame-ancestors https://desk.example.com;" in framed.headers["content-security-policy"]
    assert "x-frame-options" not in framed.headers
    script = api.client.get("/ui/static/app.js")
    assert script.status_code == 200
    assert script.headers["referrer-policy"] == "no-referrer"
    assert api.client.get("/ui/static/%2E%2E/page.py").status_code == 404
