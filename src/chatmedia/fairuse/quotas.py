"""Quotas per tenant: bytes stored, files, and bytes added per day (UTC).

A tenant's usage is counted in the transactions that add and remove its files (each takes
the tenant's usage row last, chatmedia.db.usage), so it is exact at every commit. An
upload in a tenant with a quota first *reserves*: one file, and the bytes it expects (what
is left, when less). As its bytes arrive it reserves more, doubling, and is refused with
QuotaExceeded the moment it would pass what is left; when it is stored, the reservation is
settled in the same transaction that counts the file, and on any failure it is released.
Every reservation takes the tenant's usage row lock (PostgreSQL; SQLite's write
transaction holds the whole database), so concurrent uploads on any number of workers and
nodes can never overshoot a quota together. A node that dies leaves reservations behind;
their lease runs out and housekeeping releases them.

A resumable upload holds its reservation for its whole life (`hold_upload`): from its
creation until it becomes a File (whose transaction settles it), is terminated or expires
(then its lease ends with it).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime, timedelta

import anyio

from chatmedia.config import Settings
from chatmedia.db.engine import Conn
from chatmedia.db.usage import Figures, Limits, Usage, day_of
from chatmedia.errors import QuotaExceeded
from chatmedia.services import Services
from chatmedia.units import format_size

# A reservation's lease, renewed while its bytes keep coming.
LEASE = timedelta(hours=1)
RENEW_AFTER = 600.0  # seconds
# What an upload of unknown length reserves first (then doubling).
FIRST_STEP = 1 << 20
SWEEP_BATCH = 500


def default_limits(settings: Settings) -> Limits:
    """The quotas of a tenant without its own (CHATMEDIA_QUOTA_*)."""
    return Limits(settings.quota_bytes, settings.quota_files, settings.quota_daily_bytes)


async def limits_of(conn: Conn, settings: Settings, tenant: str) -> Limits:
    """The quotas that hold for `tenant`: its own, else the defaults."""
    return await Usage(conn).limits(tenant) or default_limits(settings)


def today() -> int:
    """Today (UTC), in days since 1970-01-01."""
    return day_of(datetime.now(UTC))


class Reservation:
    """What one upload holds of its tenant's quotas while its bytes arrive. Without
    quotas to respect (`limits` None) it holds nothing and costs nothing."""

    def __init__(
        self,
        services: Services,
        tenant: str,
        limits: Limits | None,
        reservation_id: str | None = None,
        until: datetime | None = None,
    ) -> None:
        self._services = services
        self._tenant = tenant
        self._limits = limits
        self._id = reservation_id or "res_" + secrets.token_hex(8)
        self._until = until
        self._bytes = 0
        self._renewed = time.monotonic()
        self._held = False

    async def hold(self, expected: int | None, whole: bool = False) -> None:
        """Reserve one file and `expected` bytes (what is left, when less, unless `whole`);
        raises QuotaExceeded when no file may be added (or, `whole`, not all the bytes)."""
        if self._limits is None:
            return
        wanted = FIRST_STEP if expected is None else expected
        async with self._services.db.write() as conn:
            usage = Usage(conn)
            figures = await usage.lock(self._tenant)
            _check_files(self._tenant, self._limits, figures)
            if whole and expected is not None:
                _check_bytes(self._tenant, self._limits, figures, expected)
            room = _room(self._limits, figures)
            granted = wanted if room is None else max(0, min(wanted, room))
            await usage.reserve(self._id, self._tenant, granted, 1, self._until or _lease_end())
        self._bytes = granted
        self._held = True

    def adopt(self, held: int) -> None:
        """Take over a reservation of `held` bytes made earlier under this id (a resumable
        upload's): settled or released by this one from now on."""
        self._bytes = held
        self._held = self._limits is not None

    def meter(self, chunks: AsyncIterable[bytes]) -> AsyncIterable[bytes]:
        """`chunks`, reserving more as they pass what is held; raises QuotaExceeded as
        soon as they would pass the quota."""
        return self._metered(chunks) if self._held else chunks

    async def _metered(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        total = 0
        async for chunk in chunks:
            total += len(chunk)
            if total > self._bytes or time.monotonic() - self._renewed > RENEW_AFTER:
                await self._grow(total)
            yield chunk

    async def settle(self, conn: Conn, size: int) -> None:
        """In the transaction that adds the file of `size` bytes: end the reservation (the
        file's own figures are counted as it is inserted). A reservation that lapsed
        meanwhile is checked afresh."""
        if not self._held:
            return
        usage = Usage(conn)
        if not await usage.release(self._id):
            assert self._limits is not None
            figures = await usage.lock(self._tenant)
            _check_files(self._tenant, self._limits, figures)
            _check_bytes(self._tenant, self._limits, figures, size)
        self._held = False

    async def release(self) -> None:
        """Give back what is held (an upload that failed, was refused or cancelled)."""
        if not self._held:
            return
        self._held = False
        with anyio.CancelScope(shield=True):
            async with self._services.db.write() as conn:
                await Usage(conn).release(self._id)

    async def _grow(self, total: int) -> None:
        assert self._limits is not None
        wanted = max(total, min(2 * self._bytes, self._services.settings.max_upload_size))
        async with self._services.db.write() as conn:
            usage = Usage(conn)
            figures = await usage.lock(self._tenant)
            _check_bytes(self._tenant, self._limits, figures, total - self._bytes)
            room = _room(self._limits, figures)
            grant = wanted - self._bytes if room is None else min(wanted - self._bytes, room)
            if not await usage.grow(self._id, self._tenant, grant, _lease_end()):
                # The lease ran out and housekeeping released it: hold it all afresh.
                _check_files(self._tenant, self._limits, figures)
                _check_bytes(self._tenant, self._limits, figures, self._bytes + grant)
                await usage.reserve(self._id, self._tenant, self._bytes + grant, 1, _lease_end())
        self._bytes += grant
        self._renewed = time.monotonic()


async def reserve(services: Services, tenant: str, expected: int | None) -> Reservation:
    """A reservation for an upload into `tenant` of about `expected` bytes (None: not
    known); raises QuotaExceeded when the tenant may add no file."""
    reservation = await _reservation(services, tenant)
    await reservation.hold(expected)
    return reservation


def upload_hold(upload_id: str) -> str:
    """The id of the reservation a resumable upload holds."""
    return "upload_" + upload_id


async def hold_upload(
    services: Services, tenant: str, upload_id: str, length: int | None, until: datetime
) -> None:
    """Reserve one file and `length` bytes (FIRST_STEP when not said yet) for a resumable
    upload until `until` (its expiry, which each PATCH pushes back); raises QuotaExceeded
    when they are not all there."""
    reservation = await _reservation(services, tenant, upload_hold(upload_id), until)
    await reservation.hold(length, whole=True)


async def adopt_upload(services: Services, tenant: str, upload_id: str) -> Reservation:
    """The reservation a resumable upload holds, for the upload that makes its File (it
    grows from there as the bytes pass, and is checked afresh if it lapsed)."""
    reservation = await _reservation(services, tenant, upload_hold(upload_id))
    async with services.db.read() as conn:
        reservation.adopt(await Usage(conn).reserved(upload_hold(upload_id)))
    return reservation


async def _reservation(
    services: Services,
    tenant: str,
    reservation_id: str | None = None,
    until: datetime | None = None,
) -> Reservation:
    async with services.db.read() as conn:
        limits = await limits_of(conn, services.settings, tenant)
    return Reservation(
        services, tenant, None if limits.unlimited else limits, reservation_id, until
    )


async def admit_reference(conn: Conn, services: Services, tenant: str) -> None:
    """In the transaction that adds an EXTERNAL file (a file, no stored bytes): raise
    QuotaExceeded when `tenant` may add no file."""
    limits = await limits_of(conn, services.settings, tenant)
    if limits.max_files is not None:
        _check_files(tenant, limits, await Usage(conn).lock(tenant))


async def release_lapsed(services: Services, now: datetime | None = None) -> int:
    """Release reservations whose lease ran out (their node stopped); how many."""
    async with services.db.write() as conn:
        usage = Usage(conn)
        lapsed = await usage.expired_reservations(now or datetime.now(UTC), SWEEP_BATCH)
        for reservation_id in lapsed:
            await usage.release(reservation_id)
    return len(lapsed)


def _lease_end() -> datetime:
    return datetime.now(UTC) + LEASE


def _room(limits: Limits, figures: Figures) -> int | None:
    """Bytes the tenant may still take (None: no limit on bytes)."""
    rooms = []
    if limits.max_bytes is not None:
        rooms.append(limits.max_bytes - figures.bytes - figures.reserved_bytes)
    if limits.max_daily_bytes is not None:
        added = figures.bytes_on(today())
        rooms.append(limits.max_daily_bytes - added - figures.reserved_bytes)
    return min(rooms) if rooms else None


def _check_files(tenant: str, limits: Limits, figures: Figures) -> None:
    if limits.max_files is not None and figures.files + figures.reserved_files >= limits.max_files:
        raise QuotaExceeded(
            f"tenant {tenant} is at its quota maxFiles of {limits.max_files} files"
            f" ({figures.files} stored, {figures.reserved_files} uploading)"
        )


def _check_bytes(tenant: str, limits: Limits, figures: Figures, more: int) -> None:
    """Raise QuotaExceeded naming the byte quota that `more` bytes would pass, if any."""
    held = figures.reserved_bytes
    for name, limit, used in (
        ("maxBytes", limits.max_bytes, figures.bytes),
        ("maxDailyBytes", limits.max_daily_bytes, figures.bytes_on(today())),
    ):
        if limit is not None and used + held + more > limit:
            raise QuotaExceeded(
                f"the upload would take tenant {tenant} past its quota {name} of"
                f" {format_size(limit)} ({limit} bytes): {used} bytes used,"
                f" {held} held by uploads under way"
            )
