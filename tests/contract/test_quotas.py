"""Quota reservations over a real database: concurrent uploads never pass a quota
together, every way of failing gives back what it held, and a node that vanished gives
back what it held once its lease runs out."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from chatmedia.access.principal import operator
from chatmedia.db.usage import Limits, Usage
from chatmedia.errors import FileTooLarge, QuotaExceeded
from chatmedia.fairuse.quotas import LEASE, release_lapsed, reserve
from chatmedia.pipelines.files import delete_file
from chatmedia.pipelines.tenants import set_quota, tenant_usage
from chatmedia.pipelines.upload import UploadInfo, store_file
from chatmedia.services import Services
from tests.contract.test_blob_store import stream

pytestmark = pytest.mark.anyio
TENANT = "acme"
ACME = operator(TENANT)


async def figures(services: Services) -> tuple[int, int, int, int]:
    usage = (await tenant_usage(services, TENANT)).figures
    return usage.bytes, usage.files, usage.reserved_bytes, usage.reserved_files


async def test_concurrent_uploads_of_unknown_length_share_the_last_bytes(
    services: Services,
) -> None:
    await set_quota(services, TENANT, Limits(max_bytes=100_000))
    outcomes: list[str] = []

    async def one() -> None:
        data = secrets.token_bytes(30_000)
        try:
            # Chunked, no length announced: the reservation grows as the bytes arrive.
            await store_file(services, ACME, stream(data, 4096), lambda: UploadInfo("a.bin"))
            outcomes.append("stored")
        except QuotaExceeded:
            outcomes.append("refused")

    async with anyio.create_task_group() as tasks:
        for _ in range(8):
            tasks.start_soon(one)
    stored = outcomes.count("stored")
    assert 1 <= stored <= 3, outcomes
    assert await figures(services) == (stored * 30_000, stored, 0, 0)
    assert await services.store.sweep_staging(timedelta(0)) == 0  # nothing left staged


async def test_every_failure_gives_the_reservation_back(services: Services) -> None:
    await set_quota(services, TENANT, Limits(max_bytes=10_000_000, max_files=5))
    too_large = secrets.token_bytes(services.settings.max_upload_size + 1)
    with pytest.raises(FileTooLarge):
        await store_file(services, ACME, stream(too_large), lambda: UploadInfo("a.bin"))

    def describe() -> UploadInfo:
        raise ValueError("described badly")

    with pytest.raises(ValueError, match="described badly"):
        await store_file(services, ACME, stream(b"abc"), describe)
    assert await figures(services) == (0, 0, 0, 0)


async def test_a_vanished_uploads_reservation_lapses(services: Services) -> None:
    await set_quota(services, TENANT, Limits(max_files=1))
    held = await reserve(services, TENANT, 1000)
    assert await figures(services) == (0, 0, 1000, 1)
    with pytest.raises(QuotaExceeded, match="maxFiles"):
        await reserve(services, TENANT, 10)
    # Its node died: nobody releases it; housekeeping does once the lease has run out.
    assert await release_lapsed(services) == 0
    assert await release_lapsed(services, datetime.now(UTC) + LEASE + timedelta(1)) == 1
    assert await figures(services) == (0, 0, 0, 0)
    await held.release()  # late, and harmless
    assert await figures(services) == (0, 0, 0, 0)


async def test_usage_rows_stay_exact_through_uploads_and_deletes(services: Services) -> None:
    data = secrets.token_bytes(5000)
    first = await store_file(services, ACME, stream(data), lambda: UploadInfo("a.bin"))
    await store_file(services, ACME, stream(data), lambda: UploadInfo("b.bin"))  # deduplicated
    assert await figures(services) == (10_000, 2, 0, 0)
    await delete_file(services, ACME, first.id)
    assert await figures(services) == (5000, 1, 0, 0)
    async with services.db.read() as conn:
        assert [f.tenant for f in await Usage(conn).every()] == [TENANT]
