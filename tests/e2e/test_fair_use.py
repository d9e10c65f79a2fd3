"""Rate limits and the lockout through a real `chatmedia serve`: bursts refused with 429
and the RateLimit headers, then recovering; two workers allowing no more than one; the
lockout after failed authentications, which a valid key passes; X-Forwarded-For believed
only from a trusted proxy."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import png_bytes
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e
POLICY = re.compile(r'^"(key|address|auth-failures)";q=(\d+);w=(\d+)$')
STATE = re.compile(r'^"(key|address|auth-failures)";r=(\d+);t=(\d+)$')


def assert_limited(answer: httpx.Response, policy: str) -> int:
    """A 429 of `policy` with its headers; returns Retry-After."""
    assert answer.status_code == 429, answer.text
    if answer.request.method != "HEAD":
        assert answer.json()["error"]["code"] == "rate_limited"
    assert POLICY.match(answer.headers["ratelimit-policy"])[1] == policy  # type: ignore[index]
    state = STATE.match(answer.headers["ratelimit"])
    assert state is not None
    assert (state[1], state[2]) == (policy, "0")
    retry_after = int(answer.headers["retry-after"])
    assert 1 <= retry_after <= 60
    return retry_after


def burst(
    send: Callable[[], httpx.Response], count: int, rate: int, ok: int = 200
) -> list[httpx.Response]:
    """`count` requests at once against a limit of `rate`/s (a burst of twice as many):
    the burst is admitted, and only what the window refilled meanwhile besides; the first
    refused is a 429 of its own. Returns the answers."""
    started = time.monotonic()
    answers = [send() for _ in range(count)]
    elapsed = time.monotonic() - started
    admitted = [a.status_code for a in answers].count(ok)
    assert 2 * rate <= admitted <= 2 * rate + rate * elapsed + 1, (admitted, elapsed)
    refused = [a for a in answers if a.status_code != ok]
    assert refused, "nothing was refused"
    return answers


def test_a_burst_over_the_key_rate_gets_429_then_recovers(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(rate_limit="20/s")  # a burst of 40 in a 2 s window
    with server.client(headers=server.auth) as client:
        answers = burst(lambda: client.get("/v1/usage"), 60, 20)
        ok = [a for a in answers if a.status_code == 200]
        limited = [a for a in answers if a.status_code != 200]
        for answer in ok:
            assert answer.headers["ratelimit-policy"] == '"key";q=40;w=2'
            assert STATE.match(answer.headers["ratelimit"]) is not None
        assert int(STATE.match(ok[0].headers["ratelimit"])[2]) == 39  # type: ignore[index]
        wait = max(assert_limited(a, "key") for a in limited)
        time.sleep(wait)
        assert client.get("/v1/usage").status_code == 200


def test_a_key_of_its_own_rate(start_server: Callable[..., Server]) -> None:
    server = start_server()
    with server.client(headers=server.auth) as client:
        created = client.post("/v1/keys", json={"name": "slow", "scopes": ["files:read"],
                                                "rateLimit": "5/s"})  # fmt: skip
        assert created.status_code == 201, created.text
        assert created.json()["rateLimit"] == "5/s"
        slow = {"Authorization": "Bearer " + created.json()["key"]}
        answers = burst(lambda: client.get("/v1/usage", headers=slow), 15, 5)
        assert_limited(next(a for a in answers if a.status_code != 200), "key")
        # The default key is not slowed by the other's limit.
        assert client.get("/v1/usage").status_code == 200
        # A key cannot grant more than its own rate, nor an unparsable one.
        admin_slow = client.post("/v1/keys", json={"name": "a", "scopes": ["admin"],
                                                   "rateLimit": "5/s"}).json()["key"]  # fmt: skip
        higher = client.post(
            "/v1/keys",
            json={"name": "b", "scopes": ["files:read"], "rateLimit": "6/s"},
            headers={"Authorization": "Bearer " + admin_slow},
        )
        assert higher.status_code == 400, higher.text
        bad = client.post("/v1/keys", json={"name": "c", "scopes": ["admin"], "rateLimit": "5"})
        assert bad.status_code == 400
    made = server.cli("keys", "create", "--name", "cli", "--rate", "300/min")
    assert made.stdout.strip().splitlines()[-1].startswith("cm_")
    assert "300/min" in server.cli("keys", "list").stdout


def test_two_workers_together_allow_no_more_than_the_rate(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(workers="2", rate_limit="50/s")  # burst 100
    workers = server.worker_pids()
    assert len(workers) == 2
    held = server.clients_on_each_worker(4, headers=server.auth)
    served = dict.fromkeys(workers, 0)
    counts = {"ok": 0, "limited": 0, "other": 0}
    lock = threading.Lock()
    stop = time.monotonic() + 3.0

    def hammer(client: httpx.Client, pid: int) -> None:
        while time.monotonic() < stop:
            status = client.get("/v1/usage").status_code
            outcome = {200: "ok", 429: "limited"}.get(status, "other")
            with lock:
                counts[outcome] += 1
                served[pid] += int(status == 200)

    started = time.monotonic()
    threads = [
        threading.Thread(target=hammer, args=(client, pid))
        for pid, clients in held.items()
        for client in clients
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    for client in (c for clients in held.values() for c in clients):
        client.close()
    assert all(n > 10 for n in served.values()), served  # both workers admitted requests
    assert counts["other"] == 0, counts
    assert counts["limited"] > counts["ok"], counts  # far more was asked than allowed
    # At most the rate over the time, plus one burst (and a window's rounding).
    assert counts["ok"] <= 50 * elapsed + 100 + 5, (counts, elapsed)
    assert counts["ok"] >= 50 * 3.0 * 0.8, counts


def test_the_open_download_is_limited_by_address_and_signed_links_are_not(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(anon_rate_limit="10/s")  # burst 20
    with server.client(headers=server.auth) as client:
        uploaded = client.post(
            "/file-engine/api/uploadFileStream",
            files={"file": ("a.png", png_bytes(5, 5))},
            data={"conversationId": "c1"},
        ).json()
        link = client.post("/v1/files", files={"file": ("b.png", png_bytes(6, 6))}).json()
    with server.client() as anonymous:
        path = f"/file-engine/api/downloadFileStream?filename={uploaded['name']}"
        answers = burst(lambda: anonymous.get(path), 30, 10)
        assert answers[0].headers["ratelimit-policy"] == '"address";q=20;w=2'
        refused = next(a for a in answers if a.status_code != 200)
        assert_limited(refused, "address")
        assert refused.json()["message"] == "Too many requests."  # the file-engine's shape
        # A signed link is its own credential: never limited by the address.
        for _ in range(60):
            assert anonymous.get(link["url"]).status_code == 200


def test_failed_authentications_lock_the_address_out_but_not_a_valid_key(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(auth_failure_limit="5")
    with server.client() as client:
        bad = {"Authorization": "Bearer cm_not-a-key"}
        for _ in range(5):
            assert client.get("/v1/files", headers=bad).status_code == 401
        retry_after = assert_limited(client.get("/v1/files", headers=bad), "auth-failures")
        assert retry_after > 50
        # Locked out: no key at all, a bad signature, the open download...
        assert_limited(client.get("/v1/files"), "auth-failures")
        assert_limited(client.get("/v1/files/x/content?exp=1&sig=x&g=0&kid=0"), "auth-failures")
        assert_limited(
            client.get("/file-engine/api/downloadFileStream?filename=x"), "auth-failures"
        )
        # ... but a valid key works on, from the same address.
        assert client.get("/v1/files", headers=server.auth).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    start_server: Callable[..., Server],
) -> None:
    bad = {"Authorization": "Bearer cm_not-a-key"}
    behind_proxy = start_server(auth_failure_limit="3", trusted_proxies="127.0.0.1/32")
    with behind_proxy.client() as client:
        first = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"} | bad
        for _ in range(3):
            assert client.get("/v1/files", headers=first).status_code == 401
        assert_limited(client.get("/v1/files", headers=first), "auth-failures")
        # Counted under 203.0.113.9 (the nearest untrusted hop), not the forged first one
        # nor the proxy: another client behind the same proxy is not locked out.
        other = {"X-Forwarded-For": "198.51.100.7, 203.0.113.10"} | bad
        assert client.get("/v1/files", headers=other).status_code == 401
        assert_limited(
            client.get("/v1/files", headers={"X-Forwarded-For": "203.0.113.9"}), "auth-failures"
        )
    direct = start_server(auth_failure_limit="3")
    with direct.client() as client:
        for n in range(3):
            spoofed = {"X-Forwarded-For": f"203.0.113.{n}"} | bad
            assert client.get("/v1/files", headers=spoofed).status_code == 401
        # Not from a trusted proxy: the header is ignored and the peer itself is counted.
        assert_limited(
            client.get("/v1/files", headers={"X-Forwarded-For": "203.0.113.99"} | bad),
            "auth-failures",
        )


def test_requests_with_an_idempotency_key_count_too(start_server: Callable[..., Server]) -> None:
    server = start_server()
    with server.client(headers=server.auth) as client:
        body = {"name": "w", "scopes": ["files:write"], "rateLimit": "5/s"}
        writer = {"Authorization": "Bearer " + client.post("/v1/keys", json=body).json()["key"]}
        reference = {"url": "https://cdn.example.com/a", "contentType": "image/png", "size": 1}
        sent = iter(range(15))

        def create() -> httpx.Response:
            headers = writer | {"Idempotency-Key": f"k{next(sent)}"}
            return client.post("/v1/files/external", json=reference, headers=headers)

        answers = burst(create, 15, 5, ok=201)
    assert_limited(next(a for a in answers if a.status_code != 201), "key")
