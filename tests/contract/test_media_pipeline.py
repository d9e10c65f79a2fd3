"""The media pipeline over real storage and a real database (SQLite + local, PostgreSQL +
S3): previews asked for before their job ran are made on demand, once however many ask at
the same moment, which is the file's job done; previews go with their blob; a new photo
on a local store is described before its upload answers, and only then."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anyio
import pytest

from chatmedia.access.principal import operator
from chatmedia.db.jobs import Jobs
from chatmedia.media import inline
from chatmedia.media.job import MEDIA_JOB
from chatmedia.media.previews import preview_file
from chatmedia.media.store import preview_key
from chatmedia.pipelines import files
from chatmedia.pipelines.upload import UploadInfo, store_file
from chatmedia.services import Services
from tests.contract.test_blob_store import stream
from tests.media_files import MediaFiles, shared_media

pytestmark = pytest.mark.anyio


@pytest.fixture
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaFiles:
    return shared_media(tmp_path_factory)


def counting(services: Services) -> tuple[Services, list[str]]:
    """The services with a sandbox that counts the tasks it runs."""
    runs: list[str] = []
    sandbox = services.sandbox

    class Counting:
        async def run(
            self, task: str, path: str, start_within: float | None = None, **options: Any
        ) -> dict[str, Any]:
            runs.append(task)
            return await sandbox.run(task, path, start_within, **options)

        def idle(self) -> bool:
            return sandbox.idle()

        def close(self) -> None:
            sandbox.close()

    return replace(services, sandbox=Counting()), runs  # type: ignore[arg-type]


async def test_a_preview_asked_for_by_many_at_once_is_made_once(
    services: Services, media: MediaFiles
) -> None:
    # Not described in the upload (chatmedia.media.inline): the on-demand path alone.
    settings = replace(services.settings, media_inline_timeout=0.0)
    services, runs = counting(replace(services, settings=settings))
    body = media.photo(6).read_bytes()
    record = await store_file(services, operator(), stream(body), lambda: UploadInfo("p.jpg"))
    assert record.media is not None
    assert record.media.status == "pending"
    served: list[str] = []

    async def ask() -> None:
        preview = await preview_file(services, record, 320)
        served.append(preview.sha256 or "")

    async with anyio.create_task_group() as tasks:
        for _ in range(20):
            tasks.start_soon(ask)
    assert runs == ["image"]
    assert served == [preview_key(record.sha256 or "", 320)] * 20
    assert await services.store.stat(served[0]) is not None
    # That was the file's job: it is done, and the record says so everywhere.
    async with services.db.read() as conn:
        assert await Jobs(conn).count(MEDIA_JOB) == 0
    again = await files.get_file(services, operator(), record.id)
    assert again.media is not None
    assert again.media.status == "done"
    # The previews go with the blob's last file.
    await files.delete_file(services, operator(), record.id)
    assert await services.store.stat(served[0]) is None


async def test_photos_sent_at_once_wait_their_turn_to_be_described_in_their_uploads(
    services: Services, media: MediaFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Four at once on two slots: two run, two wait for them (a slow machine may take its
    # time: the wait is long here), and all four answer with their previews, on a local
    # store (on S3 the jobs do it, as for one photo).
    local = services.local_paths is not None
    monkeypatch.setattr(inline, "START_WITHIN", 30.0)
    services, runs = counting(services)
    photos = [media.photo(orientation).read_bytes() for orientation in (1, 3, 6, 8)]
    records = []

    async def send(body: bytes) -> None:
        records.append(await store_file(services, operator(), stream(body), UploadInfo))

    async with anyio.create_task_group() as tasks:
        for body in photos:
            tasks.start_soon(send, body)
    assert [r.media.status if r.media else None for r in records] == [
        "done" if local else "pending"
    ] * 4
    assert runs == (["image"] * 4 if local else [])
    async with services.db.read() as conn:
        assert await Jobs(conn).count(MEDIA_JOB) == (0 if local else 4)


async def test_a_new_photo_is_described_before_its_upload_answers_when_that_is_quick(
    services: Services, media: MediaFiles
) -> None:
    services, runs = counting(services)
    body = media.photo(6).read_bytes()
    record = await store_file(services, operator(), stream(body), lambda: UploadInfo("p.jpg"))
    assert record.media is not None
    local = services.local_paths is not None
    # Described in the upload on a local store (its bytes are on this machine), else later.
    assert record.media.status == ("done" if local else "pending")
    async with services.db.read() as conn:
        assert await Jobs(conn).count(MEDIA_JOB) == (0 if local else 1)
    if local:
        assert runs == ["image"]
        assert [p.size for p in record.media.previews] == [320, 800]
        assert await services.store.stat(preview_key(record.sha256 or "", 320)) is not None
    # The same bytes again: what is known of them stands, nothing is decoded again.
    again = await store_file(services, operator(), stream(body), lambda: UploadInfo("q.jpg"))
    assert again.media == record.media
    assert runs == (["image"] if local else [])
    # A video is never described in its upload: it waits for its job.
    video = await store_file(
        services, operator(), stream(media.phone_video.read_bytes()), lambda: UploadInfo("v.mp4")
    )
    assert video.media is not None
    assert video.media.status == "pending"
    assert runs == (["image"] if local else [])
