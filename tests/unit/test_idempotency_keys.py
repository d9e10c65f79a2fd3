"""The idempotency-key repository, its sweep, and the request hasher."""

from __future__ import annotations

import itertools
import string
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmedia.db import Database
from chatmedia.db.idempotency import IdempotencyKeys, IdempotencyRecord
from chatmedia.http.idempotency import sweep_idempotency_keys
from chatmedia.http.request_hash import RequestHasher, valid_key

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SCOPE = "s" * 64
HOUR = timedelta(hours=1)
DAY = timedelta(hours=24)


async def claim(db: Database, key: str, now: datetime = NOW, scope: str = SCOPE) -> bool:
    async with db.write() as conn:
        return await IdempotencyKeys(conn).claim(
            scope, key, now, expired_before=now - DAY, stale_before=now - HOUR
        )


async def complete(db: Database, key: str, claimed_at: datetime = NOW) -> bool:
    async with db.write() as conn:
        return await IdempotencyKeys(conn).complete(
            SCOPE,
            key,
            claimed_at,
            request_hash="h" * 64,
            status=201,
            headers=[("content-type", "application/json"), ("etag", '"x"')],
            body=b'{"id": 1}',
            now=claimed_at + timedelta(seconds=1),
        )


async def get(db: Database, key: str, scope: str = SCOPE) -> IdempotencyRecord | None:
    async with db.read() as conn:
        return await IdempotencyKeys(conn).get(scope, key)


@pytest.mark.anyio
async def test_claim_complete_and_read_back(db: Database) -> None:
    assert await get(db, "k") is None
    assert await claim(db, "k")
    assert await get(db, "k") == IdempotencyRecord(scope=SCOPE, key="k", created_at=NOW)
    assert not await claim(db, "k", NOW + timedelta(minutes=1))  # in progress
    assert await complete(db, "k")
    assert await get(db, "k") == IdempotencyRecord(
        scope=SCOPE,
        key="k",
        created_at=NOW,
        completed_at=NOW + timedelta(seconds=1),
        request_hash="h" * 64,
        status=201,
        headers=(("content-type", "application/json"), ("etag", '"x"')),
        body=b'{"id": 1}',
    )
    assert not await claim(db, "k", NOW + 23 * HOUR)  # a live answer is never replaced
    assert await claim(db, "k", scope="t" * 64)  # another API key's space


@pytest.mark.anyio
async def test_expired_and_stale_records_are_replaced(db: Database) -> None:
    assert await claim(db, "done")
    assert await complete(db, "done")
    assert await claim(db, "done", NOW + DAY + timedelta(seconds=1))
    record = await get(db, "done")
    assert record is not None
    assert record.completed_at is None
    assert record.created_at == NOW + DAY + timedelta(seconds=1)

    assert await claim(db, "running")
    assert not await claim(db, "running", NOW + HOUR - timedelta(seconds=1))
    assert await claim(db, "running", NOW + HOUR + timedelta(seconds=1))
    # The first claim was taken over: its owner can neither complete nor release it.
    assert not await complete(db, "running", NOW)
    async with db.write() as conn:
        await IdempotencyKeys(conn).release(SCOPE, "running", NOW)
    record = await get(db, "running")
    assert record is not None
    assert record.created_at == NOW + HOUR + timedelta(seconds=1)


@pytest.mark.anyio
async def test_release_deletes_only_a_claim_in_progress(db: Database) -> None:
    assert await claim(db, "a")
    assert await claim(db, "b")
    assert await complete(db, "b")
    async with db.write() as conn:
        await IdempotencyKeys(conn).release(SCOPE, "a", NOW)
        await IdempotencyKeys(conn).release(SCOPE, "b", NOW)
    assert await get(db, "a") is None
    assert await get(db, "b") is not None


@pytest.mark.anyio
async def test_concurrent_claims_have_one_winner(db: Database) -> None:
    results: list[bool] = []

    async def one() -> None:
        results.append(await claim(db, "race"))

    async with anyio.create_task_group() as tasks:
        for _ in range(5):
            tasks.start_soon(one)
    assert sorted(results) == [False] * 4 + [True]


@pytest.mark.anyio
async def test_sweep_deletes_records_older_than_a_day(db: Database) -> None:
    for n in range(7):
        assert await claim(db, f"old{n}", NOW - DAY - timedelta(minutes=n + 1))
    assert await claim(db, "young", NOW - DAY + timedelta(minutes=1))
    assert await complete(db, "young", NOW - DAY + timedelta(minutes=1))
    async with db.write() as conn:
        assert await IdempotencyKeys(conn).delete_created_before(NOW - DAY, 3) == 3
    assert await sweep_idempotency_keys(db, NOW) == 4
    assert await sweep_idempotency_keys(db, NOW) == 0
    assert await get(db, "young") is not None
    assert await get(db, "old0") is None


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (b"a", True),
        (b"x" * 255, True),
        (b"7f1c-\x21~", True),
        (b"", False),
        (b"x" * 256, False),
        (b"a b", False),
        (b"a\tb", False),
        (b"\xc3\xa9", False),
        (b"a\x7f", False),
    ],
)
def test_valid_key(value: bytes, valid: bool) -> None:
    assert valid_key(value) is valid


# The request hasher.

# RFC 2046 §5.1.1 bchars (without the space, which may not end a boundary).
BCHARS = string.ascii_letters + string.digits + "'()+_,-./:=?"
# An all-dash boundary is the one kind that a delimiter's own "--" can extend leftwards,
# so that its occurrences are not exactly the delimiters; no client makes one.
boundaries = st.text(BCHARS, min_size=1, max_size=70).filter(lambda b: b.strip("-") != "")


def form_body(boundary: bytes, parts: list[bytes]) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return body + b"--" + boundary + b"--\r\n"


def digest(boundary: str, body: bytes, cuts: list[int], method: str = "POST") -> str:
    hasher = RequestHasher(method, "/v1/files", b"", f'multipart/form-data; boundary="{boundary}"')
    edges = [0, *sorted(cuts), len(body)]
    for start, end in itertools.pairwise(edges):
        hasher.update(body[start:end])
    assert hasher.size == len(body)
    return hasher.hexdigest()


def without(content: bytes, *needles: bytes) -> bytes:
    # Removing one occurrence may make another, so until none is left.
    while any(n in content for n in needles):
        for needle in needles:
            content = content.replace(needle, b"")
    return content


@given(
    first=boundaries,
    second=boundaries,
    parts=st.lists(st.binary(max_size=300), max_size=5),
    cuts=st.data(),
)
def test_hash_does_not_depend_on_the_boundary_nor_on_chunks(
    first: str, second: str, parts: list[bytes], cuts: st.DataObject
) -> None:
    one, two = first.encode(), second.encode()
    parts = [without(part, one, two) for part in parts]
    body_one, body_two = form_body(one, parts), form_body(two, parts)
    cuts_one = cuts.draw(st.lists(st.integers(0, len(body_one)), max_size=12))
    cuts_two = cuts.draw(st.lists(st.integers(0, len(body_two)), max_size=12))
    assert digest(first, body_one, cuts_one) == digest(second, body_two, cuts_two)


@given(parts=st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=3))
def test_hash_depends_on_the_parts(parts: list[bytes]) -> None:
    boundary = "----formdata-boundary-0123456789"
    original = [without(p, boundary.encode()) or b"x" for p in parts]
    changed = [*original[:-1], original[-1] + b"!"]
    assert digest(boundary, form_body(boundary.encode(), original), []) != digest(
        boundary, form_body(boundary.encode(), changed), []
    )


def test_a_boundary_split_across_chunks_is_still_found() -> None:
    body = form_body(b"abcdef", [b"payload"])
    whole = digest("abcdef", body, [])
    assert all(digest("abcdef", body, [cut]) == whole for cut in range(len(body) + 1))
    assert digest("zz", form_body(b"zz", [b"payload"]), [5, 6, 7]) == whole


def test_the_request_line_and_content_type_count() -> None:
    def plain(method: str, path: str, query: bytes, content_type: str | None) -> str:
        hasher = RequestHasher(method, path, query, content_type)
        hasher.update(b'{"a": 1}')
        return hasher.hexdigest()

    base = plain("POST", "/v1/files/external", b"", "application/json")
    assert plain("POST", "/v1/files/external", b"", "Application/JSON") == base
    assert plain("PUT", "/v1/files/external", b"", "application/json") != base
    assert plain("POST", "/v1/files/import", b"", "application/json") != base
    assert plain("POST", "/v1/files/external", b"a=1", "application/json") != base
    assert plain("POST", "/v1/files/external", b"", "text/plain") != base
    assert plain("POST", "/v1/files/external", b"", None) != base
    # Only a multipart type's boundary is left out.
    assert plain("POST", "/x", b"", "text/plain; boundary=a") != plain(
        "POST", "/x", b"", "text/plain"
    )
    body = form_body(b"b1", [b"x"])
    assert digest("b1", body, [], method="POST") != digest("b1", body, [], method="PUT")


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data; 5.s*", "multipart/form-data; b=\x85", "multipart/form-data"],
)
def test_a_content_type_the_parser_refuses_is_hashed_as_it_is(content_type: str) -> None:
    hasher = RequestHasher("POST", "/v1/files", b"", content_type)
    hasher.update(b"--x\r\n")
    assert len(hasher.hexdigest()) == 64
