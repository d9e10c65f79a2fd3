"""Resumable uploads (chatmedia.uploads.workflow) against a model, over real services
(SQLite + local disk, PostgreSQL + S3): hypothesis draws programs of tus requests —
creations (length known, deferred or too large; with or without first bytes), PATCHes at
the right or a wrong offset, of random sizes in random chunks, with a right or wrong
checksum, declaring a deferred length, cut short by the client — HEADs, terminations,
expiries, sweeps and deletions of the finished File; after every step the upload as HEAD
shows it, its row, its pieces in the store and its File are what the model says.

The model is a dict of upload id → length (None: deferred), bytes so far and state. A
refused request changes nothing, but for the deferred length a PATCH at the right offset
declared (said before its bytes are refused); a piece that does not count (a failed
checksum, a write refused or cut short with a checksum) is gone from the store; the last
byte in makes the File of exactly the model's bytes, and a write at its end then answers
with it. Where the workflow's choices are arguable, the model follows them and says so:
a refused first chunk of a creation leaves the upload it made, and terminating a
finished upload answers 204 and leaves its File."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any, Literal, TypeVar

import obstore
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.requests import ClientDisconnect

from chatmedia.access.principal import operator
from chatmedia.db.schema import uploads
from chatmedia.db.uploads import Uploads
from chatmedia.errors import (
    ChecksumMismatch,
    FileNotFound,
    FileTooLarge,
    InvalidUploadHeader,
    UploadExpired,
    UploadNotFound,
    UploadOffsetMismatch,
    UploadTooFragmented,
)
from chatmedia.pipelines import files
from chatmedia.services import Services
from chatmedia.storage import BlobMissing, Segments, segment_start
from chatmedia.storage.local import LocalBlobStore
from chatmedia.storage.s3 import S3BlobStore
from chatmedia.storage.s3parts import MultipartParts
from chatmedia.uploads.protocol import Checksum
from chatmedia.uploads.workflow import (
    Written,
    create_upload,
    parts_of,
    sweep_expired_uploads,
    terminate,
    upload_state,
    write,
)
from tests.contract.test_blob_store import read, stream

pytestmark = pytest.mark.anyio

# The size limit: small, so that FileTooLarge is as reachable as the rest.
MAX = 2000
STEPS = 24
ALGORITHMS = ("sha1", "sha256", "md5")
Outcome = tuple[type[BaseException], ...]  # the errors a step may end in; () for none
OK: Outcome = ()
T = TypeVar("T")


@pytest.fixture
def small(services: Services) -> Services:
    """The contract's services with a size limit of MAX."""
    return replace(services, settings=replace(services.settings, max_upload_size=MAX))


@dataclass
class Model:
    """An upload as it should be."""

    length: int | None
    name: str | None
    conversation: str | None
    properties: dict[str, str]
    data: bytes = b""
    state: Literal["open", "expired", "done", "gone"] = "open"


@dataclass
class Patch:
    """A PATCH's body and headers."""

    offset: int
    body: bytes
    pieces: list[int]  # where the body is cut into chunks
    checksum: Literal["none", "good", "bad"]
    algorithm: str
    cut: bool  # the client goes away after the body
    length: int | None = None  # Upload-Length, declaring a deferred one

    async def chunks(self) -> AsyncIterator[bytes]:
        start = 0
        for end in [*sorted(self.pieces), len(self.body)]:
            yield self.body[start:end]
            start = end
        if self.cut:
            raise ClientDisconnect()

    def __str__(self) -> str:
        said = f", Upload-Length: {self.length}" if self.length is not None else ""
        checked = f", {self.checksum} {self.algorithm}" if self.checksum != "none" else ""
        cut = ", cut short" if self.cut else ""
        chunks = len(self.pieces) + 1
        return f"at {self.offset}: {len(self.body)} bytes in {chunks} chunks{said}{checked}{cut}"

    def digest(self) -> Checksum | None:
        if self.checksum == "none":
            return None
        body = self.body if self.checksum == "good" else self.body + b"?"
        return Checksum(self.algorithm, hashlib.new(self.algorithm, body).digest())


def expect_write(upload: Model, patch: Patch) -> Outcome:
    """What a PATCH should end in, changing `upload` as it should change."""
    if upload.state == "gone":
        return (UploadNotFound,)
    if upload.state == "expired":
        upload.state = "gone"
        return (UploadExpired,)
    offset = len(upload.data)
    # A known length said differently and a wrong offset: either refusal will do.
    wrong = (UploadOffsetMismatch,) if patch.offset != offset else ()
    if upload.state == "done":
        if patch.offset == upload.length:
            return OK  # a retry of the request that finished it: the File
        if patch.length is not None and patch.length != upload.length:
            return (InvalidUploadHeader, *wrong)
        return (UploadOffsetMismatch,)
    if patch.offset != offset:  # before anything else: a refused PATCH declares nothing
        return (UploadOffsetMismatch,)
    if patch.length is not None:
        if upload.length is not None and patch.length != upload.length:
            return (InvalidUploadHeader,)
        if patch.length > MAX:
            return (FileTooLarge,)
        if patch.length < offset:
            return (InvalidUploadHeader,)
        upload.length = patch.length
    if len(patch.body) > (upload.length if upload.length is not None else MAX) - offset:
        return (FileTooLarge,)
    if patch.checksum == "bad" or (patch.checksum == "good" and patch.cut):
        return (ClientDisconnect,) if patch.cut else (ChecksumMismatch,)
    upload.data += patch.body  # cut short without a checksum: what arrived counts
    if upload.length == len(upload.data):
        upload.state = "done"
    return OK


def piece_names(upload_id: str, starts: set[int], generation: int) -> set[str]:
    """The names a writer's piece may have in the store (chatmedia.storage.SEGMENT_NAME):
    from its start, or (S3) from that of the tail before it, and a part's (S3) too."""
    return {f"{upload_id}/{start:020d}-{generation}{p}" for start in starts for p in ("", "p")}


def content(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass(frozen=True)
class Step:
    """One request of a program, drawn before it runs (hypothesis cannot draw inside the
    event loop): its choices are resolved against the model's state when it is made."""

    kind: Literal["create", "patch", "head", "terminate", "expire", "sweep", "delete file"]
    target: int  # which upload: an index into the open ones, or into all of them
    any_upload: bool
    # Creation.
    length: int | None
    name: str | None
    conversation: str | None
    first_bytes: bool
    # A PATCH, or the first bytes of a creation.
    wrong_offset: int  # 0: the right one
    declare: Literal["no", "end", "same", "any"]
    declared: int
    size: Literal["room", "below", "over", "small"]
    size_seed: int
    seed: int
    pieces: tuple[int, ...]  # where the body is cut into chunks, in % of it
    checksum: Literal["none", "good", "bad"]
    algorithm: str
    cut: bool


def weighted(*choices: tuple[int, T]) -> st.SearchStrategy[T]:
    """One of the choices, each as often as its weight says (shrinking to the first)."""
    return st.sampled_from([value for weight, value in choices for _ in range(weight)])


STEP = st.builds(
    Step,
    kind=weighted(
        (2, "create"),
        (8, "patch"),
        (1, "head"),
        (1, "terminate"),
        (1, "expire"),
        (1, "sweep"),
        (1, "delete file"),
    ),
    target=st.integers(0, 7),
    any_upload=weighted((4, False), (1, True)),
    length=weighted((5, "known"), (2, "deferred"), (1, "tiny"), (1, "too large")).flatmap(
        lambda kind: {
            "known": st.integers(0, MAX),
            "deferred": st.none(),
            "tiny": st.integers(0, 3),
            "too large": st.integers(MAX + 1, MAX + 9),
        }[kind]
    ),
    name=st.sampled_from([None, "a.bin", "notes.txt"]),
    conversation=st.sampled_from([None, "c1"]),
    first_bytes=st.booleans(),
    wrong_offset=weighted((9, False), (1, True)).flatmap(
        lambda wrong: st.integers(-40, 40).filter(bool) if wrong else st.just(0)
    ),
    declare=weighted((6, "no"), (2, "end"), (1, "same"), (1, "any")),
    declared=st.integers(0, MAX + 9),
    size=weighted((4, "below"), (3, "room"), (1, "over"), (1, "small")),
    size_seed=st.integers(0, MAX),
    seed=st.integers(0, 3),
    pieces=st.lists(st.integers(0, 100), max_size=3).map(tuple),
    checksum=weighted((5, "none"), (3, "good"), (1, "bad")),
    algorithm=st.sampled_from(ALGORITHMS),
    cut=weighted((12, False), (1, True)),
)


def resolve(step: Step, upload: Model, creation: bool = False) -> Patch:
    """The PATCH `step` makes to `upload` as it is (at creation, its first bytes)."""
    right = len(upload.data)
    if upload.state in ("done", "gone", "expired") and upload.length is not None:
        right = upload.length  # the end: a retry of the request that finished it
    offset = right + (0 if creation else step.wrong_offset)
    if offset < 0:
        offset = right - step.wrong_offset
    deferred = upload.length is None
    room = max((upload.length if upload.length is not None else MAX) - offset, 0)
    if step.declare == "any" and deferred:
        room = max(step.declared - offset, 0)
    sizes = {"room": room, "below": step.size_seed % (room + 1),
             "over": room + 1 + step.size_seed % 9, "small": step.size_seed % 41}  # fmt: skip
    size = sizes[step.size]
    declared = None
    if creation or step.declare == "no":
        pass
    elif step.declare == "any":
        declared = step.declared
    elif not deferred:
        declared = upload.length
    else:
        declared = offset + size if step.declare == "end" else offset
    return Patch(
        offset=offset,
        body=content(step.seed, size),
        pieces=[size * p // 100 for p in step.pieces],
        checksum=step.checksum,
        algorithm=step.algorithm,
        cut=step.cut,
        length=declared,
    )


class Program:
    """A drawn program, run step by step against the services and the model."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.uploads: dict[str, Model] = {}
        # The names of the pieces each upload's writers may have put in the store.
        self.pieces: dict[str, set[str]] = {}
        self.removed: set[str] = set()  # of those, the ones seen gone
        self.log: list[str] = []  # what was asked and answered, shown with a failure

    def say(self, upload_id: str | None, request: str, outcome: object = "") -> None:
        """Log a request, its answer and the upload as the model has it then."""
        if isinstance(outcome, BaseException):
            outcome = type(outcome).__name__
        model = self.uploads.get(upload_id or "")
        label = f" u{list(self.uploads).index(upload_id or '')}" if model else ""
        state = f"; {model.state}, {len(model.data)}/{model.length}" if model else ""
        self.log.append(f"{len(self.log)}. {request}{label} → {outcome}{state}")

    async def run(self, steps: list[Step]) -> None:
        for number, step in enumerate(steps):
            if step.kind == "create" or not self.uploads:
                made = await self.create(step, number)
                if made is not None:
                    await self.check(made)
                continue
            if step.kind == "sweep":
                await self.sweep()
                continue
            open_ids = [i for i, u in self.uploads.items() if u.state == "open"]
            ids = list(self.uploads) if step.any_upload or not open_ids else open_ids
            target = ids[step.target % len(ids)]
            if step.kind == "patch":
                await self.patch(target, step)
            elif step.kind == "head":
                await self.head(target)
            elif step.kind == "terminate":
                await self.terminate(target)
            elif step.kind == "expire":
                await self.expire(target)
            else:
                await self.delete_file(target)
            await self.check(target)
        for upload_id in self.uploads:
            await self.check(upload_id)

    # --- Requests ---------------------------------------------------------------------

    async def create(self, step: Step, number: int) -> str | None:
        """POST /v1/uploads; the upload made, if any (even with an error)."""
        length = step.length
        pairs = {"step": str(number)} | ({"filename": step.name} if step.name else {})
        pairs |= {"conversationId": step.conversation} if step.conversation else {}
        model = Model(length, step.name, step.conversation, {"step": str(number)})
        first = resolve(step, model, creation=True) if step.first_bytes else None
        before = await self.ids()
        try:
            body = first.chunks() if first else None
            written = await create_upload(
                self.services, operator(), length, pairs, body, first.digest() if first else None
            )
        except Exception as e:
            error: Exception | None = e
            written = None
        else:
            error = None
        made = await self.ids() - before
        if length is not None and length > MAX:
            self.say(None, f"create, Upload-Length: {length}", error)
            assert isinstance(error, FileTooLarge)
            assert made == set()
            return None
        # The row is made first: a refused first chunk leaves an upload at offset 0 (whose
        # Location the client is not told; the sweep ends it at its expiry).
        expected = OK
        if first is not None or length == 0:
            first = first or Patch(0, b"", [], "none", "sha256", cut=False)
            expected = expect_write(model, first)
        outcome = "File" if written is not None and written.file else "made"
        event(f"create: {type(error).__name__ if error else outcome}")
        request = f"create, Upload-Length: {length}" + (f", first bytes {first}" if first else "")
        upload_id = written.upload.id if written is not None else next(iter(made), None)
        if upload_id is not None:
            self.uploads[upload_id] = model
            self.pieces[upload_id] = piece_names(upload_id, {0}, 1)  # the first claim's
        self.say(upload_id, request, error or outcome)
        if error is not None and type(error) not in expected:
            raise error
        assert (error is None) == (expected == OK), expected
        # A File made at once leaves no row.
        assert made == (set() if model.state == "done" else {upload_id})
        if written is not None:
            self.compare(written, model)
        return upload_id

    async def patch(self, upload_id: str, step: Step) -> None:
        model = self.uploads[upload_id]
        patch = resolve(step, model)
        state = model.state
        expected = expect_write(model, patch)
        generation = await self.generation(upload_id)
        if generation is not None:  # the piece this request's claim would write
            starts = {patch.offset, *await self.tail_start(upload_id)}
            self.pieces[upload_id] |= piece_names(upload_id, starts, generation + 1)
        try:
            written = await write(
                self.services, operator(), upload_id, patch.offset, patch.chunks(),
                patch.digest(), patch.length,
            )  # fmt: skip
        except Exception as e:
            event(f"patch {state}: {type(e).__name__}")
            self.say(upload_id, f"PATCH {patch}", e)
            if type(e) not in expected:
                raise
        else:
            event(f"patch {state}: {'File' if written.file else 'written'}")
            self.say(upload_id, f"PATCH {patch}", "File" if written.file else "204")
            assert expected == OK, (written, expected)
            self.compare(written, model)

    async def head(self, upload_id: str) -> None:
        """HEAD (check() compares what it shows after every step); an expired upload is
        found so, and removed."""
        model = self.uploads[upload_id]
        if model.state == "expired":
            with pytest.raises(UploadExpired):
                await upload_state(self.services, operator(), upload_id)
            model.state = "gone"  # and its bytes with it
        self.say(upload_id, "HEAD")

    async def terminate(self, upload_id: str) -> None:
        model = self.uploads[upload_id]
        if model.state == "gone":
            with pytest.raises(UploadNotFound):
                await terminate(self.services, operator(), upload_id)
        elif model.state == "expired":
            with pytest.raises(UploadExpired):
                await terminate(self.services, operator(), upload_id)
            model.state = "gone"
        else:
            await terminate(self.services, operator(), upload_id)
            # A finished upload is its File: terminating it answers 204, leaving the File.
            if model.state == "open":
                model.state = "gone"
        self.say(upload_id, "DELETE")

    async def expire(self, upload_id: str) -> None:
        model = self.uploads[upload_id]
        async with self.services.db.write() as conn:
            await conn.execute(
                uploads.update()
                .where(uploads.c.id == upload_id)
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        if model.state == "open":
            model.state = "expired"
        self.say(upload_id, "expire")

    async def sweep(self) -> None:
        expired = sum(u.state == "expired" for u in self.uploads.values())
        self.say(None, "sweep", f"{expired} removed")
        assert await sweep_expired_uploads(self.services) == expired
        for upload in self.uploads.values():
            if upload.state == "expired":
                upload.state = "gone"

    async def delete_file(self, upload_id: str) -> None:
        model = self.uploads[upload_id]
        if model.state != "done":
            with pytest.raises(FileNotFound):
                await files.delete_file(self.services, operator(), upload_id)
        else:
            await files.delete_file(self.services, operator(), upload_id)
            model.state = "gone"  # and its upload with it: HEAD answers 404
        self.say(upload_id, "DELETE its File")

    # --- Checks -----------------------------------------------------------------------

    def compare(self, written: Written, model: Model) -> None:
        assert written.upload.offset == len(model.data)
        assert written.upload.length == model.length
        assert (written.file is not None) == (model.state == "done")
        if written.file is not None:
            assert written.file.id == written.upload.id

    async def check(self, upload_id: str) -> None:
        """The upload as HEAD shows it, its row, its pieces in the store and its File."""
        model = self.uploads[upload_id]
        async with self.services.db.read() as conn:
            row = await Uploads(conn).get(upload_id)
            segments = await Uploads(conn).segments(upload_id)
        names = self.pieces[upload_id]
        assert {s.name for s in segments} <= names  # no piece under a name no claim had
        for name in names - {s.name for s in segments} - self.removed:
            assert not await self.stored(name), name  # a piece that does not count is gone
            self.removed.add(name)  # for good: no claim writes under its name again
        if model.state == "gone":
            assert row is None
            with pytest.raises(UploadNotFound):
                await upload_state(self.services, operator(), upload_id)
            with pytest.raises(FileNotFound):
                await files.get_file(self.services, operator(), upload_id)
            return
        if model.state == "expired":  # untouched until a request or the sweep comes
            assert row is not None
            return
        state = (await upload_state(self.services, operator(), upload_id)).upload
        assert (state.offset, state.length) == (len(model.data), model.length)
        assert state.name == model.name or model.name is None
        assert state.conversation_id == model.conversation
        assert state.properties == model.properties
        if model.state == "open":
            assert row == state
            assert state.expires_at > datetime.now(UTC)
            assert state.lease_until is None  # no writer left it locked
            # The pieces that count: in order, none empty, the model's bytes.
            starts = accumulate([0, *(s.length for s in segments[:-1])])
            assert [s.start for s in segments] == list(starts)[: len(segments)]
            assert all(s.length > 0 for s in segments)
            chunks = parts_of(self.services).read(segments)
            assert b"".join([c async for c in chunks]) == model.data
            with pytest.raises(FileNotFound):
                await files.get_file(self.services, operator(), upload_id)
            return
        assert row is None
        assert segments == []
        record = await files.get_file(self.services, operator(), upload_id)
        assert record.size == len(model.data)
        assert record.sha256 == hashlib.sha256(model.data).hexdigest()
        assert record.conversation_id == model.conversation
        assert dict(record.properties) == model.properties
        if model.name is not None:
            assert record.name == model.name
        if model.data:
            assert await read(self.services.store, record.sha256, 0, record.size) == model.data

    async def stored(self, name: str) -> bool:
        """Whether the store holds a piece of this name."""
        store = self.services.store
        assert isinstance(store, Segments)
        try:
            chunks = await store.open_segment(name, 0, 0)  # none of its bytes: whether it is
        except BlobMissing:
            return False
        async with aclosing(chunks):
            assert [chunk async for chunk in chunks] == []
        return True

    async def generation(self, upload_id: str) -> int | None:
        async with self.services.db.read() as conn:
            row = await Uploads(conn).get(upload_id)
        return row.generation if row is not None else None

    async def tail_start(self, upload_id: str) -> set[int]:
        """Where the upload's last piece starts, when it is not a part (S3's tails)."""
        async with self.services.db.read() as conn:
            segments = await Uploads(conn).segments(upload_id)
        last = segments[-1].name if segments else "p"
        return set() if last.endswith("p") else {segment_start(last)}

    async def ids(self) -> set[str]:
        async with self.services.db.read() as conn:
            return set((await conn.execute(sa.select(uploads.c.id))).scalars())

    async def cleanup(self) -> None:
        """Leave no expired upload to the next program's sweep."""
        async with self.services.db.write() as conn:
            await conn.execute(
                uploads.update()
                .where(uploads.c.id.in_(list(self.uploads)))
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        await sweep_expired_uploads(self.services, limit=1000)
        # Terminated, expired or made Files: nothing of any upload is left in the store.
        assert await leftovers(self.services.store) == []


async def leftovers(store: Any) -> list[str]:
    """Uploads' pieces and staged blobs in the store, and (S3) multipart uploads under way."""
    if isinstance(store, LocalBlobStore):
        root = store._root
        return [str(p) for d in (".uploads", ".staging") for p in (root / d).rglob("*")
                if p.is_file()]  # fmt: skip
    assert isinstance(store, S3BlobStore)
    found = [m["path"] async for batch in obstore.list(store._store) for m in batch
             if m["path"].startswith(("uploads/", "staging/"))]  # fmt: skip
    parts = MultipartParts(store.location)
    try:
        return found + [key for key, _ in await parts.uploads("")]
    finally:
        await parts.aclose()


@settings(
    max_examples=45,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.integers(1, STEPS).flatmap(lambda n: st.lists(STEP, min_size=n, max_size=n)))
async def test_random_requests_follow_the_model(small: Services, steps: list[Step]) -> None:
    program = Program(small)
    try:
        await program.run(steps)
    except Exception as e:
        e.add_note("The requests, their answers, and the upload as the model has it then:")
        e.add_note("\n".join(program.log))
        raise
    finally:
        await program.cleanup()


async def test_a_refused_patch_does_not_declare_the_length(small: Services) -> None:
    """A client whose answer to a PATCH was lost sends it again, declaring the length it
    now knows (tus-js-client does, at the end of a stream of unknown length): the 409 must
    change nothing. Were the length said before the offset is checked, HEAD would show
    Upload-Offset == Upload-Length — finished, for a tus client — while no File is ever
    made and the upload expires (found by the model below)."""
    upload_id = (await create_upload(small, operator(), None, {})).upload.id
    await write(small, operator(), upload_id, 0, stream(b"hello"), None)
    with pytest.raises(UploadOffsetMismatch):
        await write(small, operator(), upload_id, 0, stream(b"hello"), None, length=5)
    state = (await upload_state(small, operator(), upload_id)).upload
    with pytest.raises(FileNotFound):
        await files.get_file(small, operator(), upload_id)
    assert (state.offset, state.length) == (5, None)


async def test_an_upload_whose_pieces_the_store_lost_ends_as_expired(services: Services) -> None:
    """A store that drops an upload's pieces behind chatmedia's back (on S3, a lifecycle
    rule aborting its multipart upload) ends the upload: 410, not a 409 forever."""
    data = content(7, 1024 * 1024)
    made = await create_upload(services, operator(), len(data), {}, stream(data[:100_000]))
    assert made.upload.offset == 100_000
    assert isinstance(services.store, Segments)
    await services.store.delete_segments(made.upload.id)
    with pytest.raises(UploadExpired):
        await write(services, operator(), made.upload.id, 100_000, stream(data[100_000:]), None)
    with pytest.raises(UploadNotFound):
        await upload_state(services, operator(), made.upload.id)


async def test_an_upload_past_ten_thousand_requests_is_too_fragmented_on_s3(
    services: Services,
) -> None:
    """S3 numbers a multipart upload's parts up to 10,000, and parts are numbered by claim:
    past that the upload ends with a clear error, as no later request could add to it
    either; local disk has no such bound."""
    data = content(8, 1000)
    made = await create_upload(services, operator(), len(data), {}, stream(data[:10]))
    async with services.db.write() as conn:
        await conn.execute(
            uploads.update().where(uploads.c.id == made.upload.id).values(generation=10_000)
        )
    rest = stream(data[10:])
    if isinstance(services.store, LocalBlobStore):
        written = await write(services, operator(), made.upload.id, 10, rest, None)
        assert written.file is not None
        assert written.file.sha256 == hashlib.sha256(data).hexdigest()
        return
    with pytest.raises(UploadTooFragmented):
        await write(services, operator(), made.upload.id, 10, rest, None)
    with pytest.raises(UploadNotFound):
        await upload_state(services, operator(), made.upload.id)
