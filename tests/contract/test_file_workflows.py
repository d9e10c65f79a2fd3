"""The upload and deletion workflows over real storage and a real database."""

import hashlib
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import anyio
import pytest

from chatmedia.access.principal import operator
from chatmedia.errors import FileNotFound, FileTooLarge, UnsupportedMediaType
from chatmedia.pipelines import files
from chatmedia.pipelines.upload import UploadInfo, store_file
from chatmedia.services import Services
from tests.conftest import HTML_BYTES, png_bytes
from tests.contract.test_blob_store import stream

pytestmark = pytest.mark.anyio


def info(name: str = "a.png", conversation: str | None = "c1") -> UploadInfo:
    return UploadInfo(name=name, conversation_id=conversation, properties={"k": "v"})


async def staged_count(services: Services) -> int:
    return await services.store.sweep_staging(timedelta(0))


async def test_store_read_delete(services: Services) -> None:
    data = png_bytes()
    record = await store_file(services, operator(), stream(data), info)
    assert record.content_type == "image/png"
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    assert record.stored_name == "c1_a.png"
    assert await files.get_file(services, operator(), record.id) == record
    assert await files.get_file_by_stored_name(services, operator(), "c1_a.png") == record
    await files.delete_file(services, operator(), record.id)
    with pytest.raises(FileNotFound):
        await files.get_file(services, operator(), record.id)
    assert await services.store.stat(record.sha256 or "") is None


async def test_name_clash_gets_a_suffix(services: Services) -> None:
    first = await store_file(services, operator(), stream(png_bytes()), info)
    second = await store_file(services, operator(), stream(png_bytes(8, 8)), info)
    assert first.stored_name == "c1_a.png"
    assert second.stored_name.startswith("c1_a-")
    assert second.stored_name.endswith(".png")
    assert len(second.stored_name) - len(first.stored_name) <= 32


async def test_unnamed_file_gets_a_name_from_its_type(services: Services) -> None:
    record = await store_file(services, operator(), stream(png_bytes()), lambda: UploadInfo())
    assert record.name == "file.png"
    assert record.stored_name == "file.png"


async def test_type_comes_from_the_bytes(services: Services) -> None:
    record = await store_file(services, operator(), stream(HTML_BYTES), lambda: info("photo.png"))
    assert record.content_type == "text/html"


async def test_limit_is_exact(services: Services) -> None:
    limit = services.settings.max_upload_size
    at_limit = random.Random(2).randbytes(limit)
    assert (await store_file(services, operator(), stream(at_limit), info)).size == limit
    with pytest.raises(FileTooLarge):
        await store_file(services, operator(), stream(at_limit + b"x"), info)
    assert await staged_count(services) == 0


async def test_refused_type_leaves_nothing(services: Services) -> None:
    strict = with_settings(services, blocked_types=("text/html",))
    with pytest.raises(UnsupportedMediaType):
        await store_file(strict, operator(), stream(HTML_BYTES), info)
    assert await staged_count(services) == 0
    assert (await files.list_files(services, operator(), None, 10, None)).items == ()


async def test_failing_metadata_leaves_nothing(services: Services) -> None:
    def broken() -> UploadInfo:
        raise FileNotFound("no")

    with pytest.raises(FileNotFound):
        await store_file(services, operator(), stream(png_bytes()), broken)
    assert await staged_count(services) == 0
    assert await services.store.stat(hashlib.sha256(png_bytes()).hexdigest()) is None


async def test_shared_content_survives_until_its_last_file(services: Services) -> None:
    first = await store_file(services, operator(), stream(png_bytes()), info)
    second = await store_file(services, operator(), stream(png_bytes()), info)
    key = first.sha256 or ""
    assert key == second.sha256
    await files.delete_file(services, operator(), first.id)
    assert await services.store.stat(key) is not None
    await files.delete_file(services, operator(), second.id)
    assert await services.store.stat(key) is None


async def test_concurrent_uploads_and_deletes_of_the_same_bytes_lose_nothing(
    services: Services,
) -> None:
    data = png_bytes()
    kept: list[str] = []

    async def upload_then_maybe_delete(n: int) -> None:
        async def slow() -> AsyncIterator[bytes]:
            for i in range(0, len(data), 7):
                await anyio.sleep(0)
                yield data[i : i + 7]

        record = await store_file(services, operator(), slow(), lambda: info(f"{n}.png"))
        if n % 2:
            await files.delete_file(services, operator(), record.id)
        else:
            kept.append(record.id)

    async with anyio.create_task_group() as tasks:
        for n in range(40):
            tasks.start_soon(upload_then_maybe_delete, n)
    assert len(kept) == 20
    for file_id in kept:
        record = await files.get_file(services, operator(), file_id)
        assert await services.store.stat(record.sha256 or "") is not None


async def test_retention_sweep(services: Services) -> None:
    old = await store_file(services, operator(), stream(png_bytes()), info)
    young = await store_file(services, operator(), stream(png_bytes(9, 9)), info)
    assert await files.sweep_expired(services) == 0  # no retention configured
    keep_a_day = with_settings(services, retention=timedelta(days=1))
    # One day after `young` was made, less a microsecond: only `old` is past a day.
    now = young.created_at + timedelta(days=1) - timedelta(microseconds=1)
    assert old.created_at < young.created_at - timedelta(microseconds=1)
    assert await files.sweep_expired(keep_a_day, now=now) == 1
    with pytest.raises(FileNotFound):
        await files.get_file(services, operator(), old.id)
    assert await files.get_file(services, operator(), young.id) == young
    assert await services.store.stat(old.sha256 or "") is None
    assert await files.sweep_expired(keep_a_day, now=now + timedelta(seconds=1)) == 1


def with_settings(services: Services, **changes: object) -> Services:
    return replace(services, settings=replace(services.settings, **changes))
