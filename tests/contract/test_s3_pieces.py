"""Resumable uploads' pieces in S3 (chatmedia.storage.s3segments): bytes become parts of one
multipart upload numbered by the writers' generations, what cannot be a part yet is a
tail that the next writer takes along, a late writer's part is never joined, and an
ended upload leaves no part, tail or multipart upload behind."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import obstore
import pytest

from chatmedia.storage import BlobMissing, TooManyParts
from chatmedia.storage.s3 import S3BlobStore
from chatmedia.storage.s3parts import MIN_PART_SIZE, MultipartParts, sign
from chatmedia.storage.s3segments import staging_token
from chatmedia.storage.s3url import parse_s3_url
from tests.contract.test_blob_store import stream
from tests.s3server import S3Server

pytestmark = pytest.mark.anyio

UPLOAD = "u" * 22
BIG, SMALL = os.urandom(MIN_PART_SIZE + 1000), os.urandom(300_000)


def name(start: int, generation: int) -> str:
    return f"{UPLOAD}/{start:020d}-{generation}"


@pytest.fixture
async def store(s3_server: S3Server) -> AsyncIterator[S3BlobStore]:
    store = S3BlobStore(parse_s3_url(s3_server.url(f"p-{secrets.token_hex(4)}"), {}))
    await store.begin_segments(UPLOAD)
    yield store
    await store.aclose()


async def leftovers(store: S3BlobStore) -> tuple[list[str], list[tuple[str, str]]]:
    """Objects under the store's prefix, and multipart uploads under way."""
    objects = [m["path"] async for batch in obstore.list(store._store) for m in batch]
    parts = MultipartParts(store.location)
    try:
        return objects, await parts.uploads("")
    finally:
        await parts.aclose()


async def staged_bytes(store: S3BlobStore, upload_id: str, size: int) -> bytes:
    joined = await store.open_segment(f"{upload_id}/{0:020d}-0", 0, size)
    return b"".join([chunk async for chunk in joined])


async def test_parts_tails_and_the_join(store: S3BlobStore) -> None:
    total = 2 * len(SMALL) + len(BIG) + len(SMALL)
    # A small first request: a tail, kept as an object.
    first, n1 = await store.put_segment(name(0, 1), stream(SMALL), None, total)
    assert (first, n1) == (name(0, 1), len(SMALL))
    with pytest.raises(BlobMissing):  # nothing joined yet
        await staged_bytes(store, UPLOAD, 0)
    # Another small one takes the tail along into a tail of its own, from the same start.
    second, n2 = await store.put_segment(name(n1, 2), stream(SMALL), (first, n1), total)
    assert (second, n2) == (name(0, 2), len(SMALL))
    held = await store.open_segment(second, 0, 2 * len(SMALL))
    assert b"".join([c async for c in held]) == SMALL + SMALL
    # Past 5 MiB with the tail: a part numbered by the writer's generation.
    offset = n1 + n2
    third, n3 = await store.put_segment(name(offset, 3), stream(BIG), (second, offset), total)
    assert (third, n3) == (name(0, 3) + "p", len(BIG))
    with pytest.raises(BlobMissing):  # a part is read only once joined
        await store.open_segment(third, 0, 1)
    # The last bytes are a part whatever their size.
    offset += n3
    last, n4 = await store.put_segment(name(offset, 4), stream(SMALL), (third, n3), total)
    assert (last, n4) == (name(offset, 4) + "p", len(SMALL))
    joined = await store.join_segments(UPLOAD, [first, second, third, last], 5)
    assert joined == f"{UPLOAD}/{0:020d}-0"
    data = SMALL + SMALL + BIG + SMALL
    assert await staged_bytes(store, UPLOAD, total) == data
    # Staged where it is, hashed as it is read back.
    staged = await store.stage_piece(joined, total, stream(data), lambda: True)
    assert staged.token == staging_token(UPLOAD)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    await store.promote(staged)
    assert b"".join([c async for c in await store.open_range(staged.key, 0, total)]) == data
    await store.delete_segments(UPLOAD)
    objects, uploads = await leftovers(store)
    assert uploads == []
    assert not [o for o in objects if "/uploads/" in o or "/staging/" in o]


async def test_a_late_writers_part_is_never_joined(store: S3BlobStore) -> None:
    late_bytes, data = os.urandom(len(BIG)), BIG + SMALL
    # Writer 1 lost its claim before it committed; writer 2 wrote the same range.
    await store.put_segment(name(0, 2), stream(BIG), None, len(data))
    await store.put_segment(name(0, 1), stream(late_bytes), None, len(data))
    done, _ = await store.put_segment(name(len(BIG), 3), stream(SMALL), None, len(data))
    # A writer later than all of them: its number is its own, the committed parts stay.
    await store.put_segment(name(0, 4), stream(late_bytes), None, len(data))
    joined = await store.join_segments(UPLOAD, [name(0, 2) + "p", done], 5)
    assert joined is not None
    assert await staged_bytes(store, UPLOAD, len(data)) == data
    staged = await store.stage_piece(joined, len(data), stream(data), lambda: True)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("same_process", [True, False])
async def test_the_hash_made_as_the_bytes_came_spares_reading_them_back(
    store: S3BlobStore, same_process: bool
) -> None:
    data = SMALL + BIG
    tail, n = await store.put_segment(name(0, 1), stream(SMALL), None, len(data))
    last, _ = await store.put_segment(name(n, 2), stream(BIG), (tail, n), len(data))
    finisher = store if same_process else S3BlobStore(store.location)
    joined = await finisher.join_segments(UPLOAD, [tail, last], 3)
    assert joined is not None
    pulled = 0

    async def read_back() -> AsyncIterator[bytes]:
        nonlocal pulled
        async for chunk in stream(data):
            pulled += len(chunk)
            yield chunk

    staged = await finisher.stage_piece(joined, len(data), read_back(), lambda: True)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert (pulled < len(data)) == same_process  # the head alone, or every byte
    if not same_process:
        await finisher.aclose()


async def test_a_last_request_without_bytes_makes_the_tail_the_last_part(
    store: S3BlobStore,
) -> None:
    tail, _ = await store.put_segment(name(0, 1), stream(SMALL), None, None)
    assert await store.put_segment(name(len(SMALL), 2), stream(b""), (tail, len(SMALL))) == (
        name(len(SMALL), 2),
        0,
    )
    assert await store.join_segments(UPLOAD, [tail], 2)
    assert await staged_bytes(store, UPLOAD, len(SMALL)) == SMALL
    # An upload of no bytes at all is an empty object.
    other = "v" * 22
    await store.begin_segments(other)
    assert await store.join_segments(other, [], 1) == f"{other}/{0:020d}-0"
    assert await store.object_size(f"staging/{staging_token(other)}") == 0


async def test_a_join_done_by_a_request_that_stopped_is_found(store: S3BlobStore) -> None:
    last, _ = await store.put_segment(name(0, 1), stream(SMALL), None, len(SMALL))
    await store.join_segments(UPLOAD, [last], 2)
    fresh = S3BlobStore(store.location)  # another process: nothing remembered
    try:
        assert await fresh.join_segments(UPLOAD, [last], 3) == f"{UPLOAD}/{0:020d}-0"
    finally:
        await fresh.aclose()


async def test_an_ended_upload_leaves_nothing(store: S3BlobStore) -> None:
    tail, n = await store.put_segment(name(0, 1), stream(SMALL), None, None)
    await store.put_segment(name(n, 2), stream(BIG), (tail, n), None)
    await store.delete_segments(UPLOAD)
    objects, uploads = await leftovers(store)
    assert (objects, uploads) == ([], [])
    # A writer still sending when the upload ended finds no multipart upload.
    fresh = S3BlobStore(store.location)
    try:
        with pytest.raises(BlobMissing):
            await fresh.put_segment(name(0, 3), stream(BIG), None, None)
    finally:
        await fresh.aclose()


async def test_parts_are_numbered_at_most_to_ten_thousand(store: S3BlobStore) -> None:
    with pytest.raises(TooManyParts):
        await store.put_segment(name(0, 10_001), stream(BIG), None, None)


async def test_a_wrong_secret_is_refused_by_the_store(store: S3BlobStore) -> None:
    wrong = MultipartParts(replace(store.location, secret_access_key="not-the-secret"))
    try:
        with pytest.raises(OSError, match="403"):
            await wrong.create("staging/x")
    finally:
        await wrong.aclose()


@pytest.mark.parametrize(
    ("request_path", "signature"),
    [
        ("/?lifecycle", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        (
            "/?max-keys=2&prefix=J",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    ],
)
def test_signatures_match_the_worked_examples_of_s3s_documentation(
    request_path: str, signature: str
) -> None:
    """S3's Signature Version 4 examples 'GET Bucket Lifecycle' and 'Get Bucket (List
    Objects)': the example key pair, 24 May 2013, an empty body."""
    location = parse_s3_url(
        "s3://examplebucket?access_key_id=AKIAIOSFODNN7EXAMPLE"
        "&secret_access_key=wJalrXUtnFEMI%2FK7MDENG%2FbPxRfiCYEXAMPLEKEY",
        {},
    )
    url = httpx.URL(f"https://examplebucket.s3.amazonaws.com{request_path}")
    empty = hashlib.sha256(b"").hexdigest()
    headers = sign(location, "GET", url, empty, datetime(2013, 5, 24, tzinfo=UTC))
    assert headers["x-amz-date"] == "20130524T000000Z"
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}"
    )


async def test_without_static_credentials_each_writer_keeps_an_object(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With obstore's credential chain alone (here: its environment variables) nothing can
    sign the multipart calls: each writer's bytes are an object, read back in order, and
    the whole is staged as a copy, as `put` stages any upload."""
    location = parse_s3_url(s3_server.url(f"c-{secrets.token_hex(4)}"), {})
    assert location.access_key_id is not None
    assert location.secret_access_key is not None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", location.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", location.secret_access_key)
    store = S3BlobStore(replace(location, access_key_id=None, secret_access_key=None))
    await store.begin_segments(UPLOAD)
    data = SMALL + BIG
    first, n = await store.put_segment(name(0, 1), stream(SMALL), None, len(data))
    second, m = await store.put_segment(name(n, 2), stream(BIG), (first, n), len(data))
    assert (first, second) == (name(0, 1), name(n, 2))  # no tail taken along, no part
    assert await store.join_segments(UPLOAD, [first, second], 3) is None
    read = b""
    for piece, length in ((first, n), (second, m)):
        read += b"".join([c async for c in await store.open_segment(piece, 0, length)])
    assert read == data
    staged = await store.stage_piece(first, len(data), stream(data), lambda: True)
    assert staged.token != staging_token(UPLOAD)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    await store.discard(staged)
    await store.delete_segments(UPLOAD)
    await store.aclose()
    signing = S3BlobStore(location)
    assert await leftovers(signing) == ([], [])
    await signing.aclose()


def test_answers_are_read_with_or_without_s3s_namespace() -> None:
    """Some S3 clones answer without S3's XML namespace."""
    from chatmedia.storage.s3parts import _all, _text, _xml

    for xmlns in ('xmlns="http://s3.amazonaws.com/doc/2006-03-01/"', ""):
        root = _xml(
            f"<ListPartsResult {xmlns}><IsTruncated>false</IsTruncated>"
            "<Part><PartNumber>3</PartNumber><ETag>&quot;e&quot;</ETag></Part>"
            "</ListPartsResult>".encode()
        )
        assert [(_text(p, "PartNumber"), _text(p, "ETag")) for p in _all(root, "Part")] == [
            ("3", '"e"')
        ]
        assert _text(root, "IsTruncated") == "false"
