"""Tenants' usage and quotas: what each holds, and setting a tenant's own quotas."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from chatmedia.access.principal import Principal, is_tenant
from chatmedia.db.usage import Figures, Limits, Usage
from chatmedia.errors import BadRequest, TenantNotAllowed
from chatmedia.fairuse.quotas import default_limits, today
from chatmedia.pipelines.keys import OPERATOR, audit_line
from chatmedia.services import Services


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """What a tenant holds, the quotas that hold for it, and whether they are its own."""

    figures: Figures
    limits: Limits
    own: bool

    @property
    def daily_bytes(self) -> int:
        """Bytes of the files it added today (UTC)."""
        return self.figures.bytes_on(today())


async def tenant_usage(services: Services, tenant: str) -> TenantUsage:
    """The usage of `tenant` (a principal's own: the route decides which tenant)."""
    async with services.db.read() as conn:
        usage = Usage(conn)
        figures = await usage.figures(tenant)
        own = await usage.limits(tenant)
    return TenantUsage(figures, own or default_limits(services.settings), own is not None)


async def every_tenant(services: Services) -> list[TenantUsage]:
    """Every tenant that holds something or has quotas of its own, by name."""
    async with services.db.read() as conn:
        usage = Usage(conn)
        figures = {f.tenant: f for f in await usage.every()}
        own = await usage.all_limits()
    defaults = default_limits(services.settings)
    return [
        TenantUsage(figures.get(t) or Figures(t), own.get(t) or defaults, t in own)
        for t in sorted(figures.keys() | own.keys())
    ]


async def set_quota(
    services: Services, tenant: str, limits: Limits, setter: Principal | None = None
) -> TenantUsage:
    """Give `tenant` quotas of its own (None: unlimited), from the next upload on. Only the
    operator or an admin key without a tenant of its own may: a tenant's own admin cannot
    lift its limits."""
    if setter is not None and not setter.tenant_free:
        raise TenantNotAllowed("only an admin key without a tenant of its own sets quotas")
    if not is_tenant(tenant):
        raise BadRequest("tenant must be 1-64 letters, digits, '.', '_' or '-'")
    async with services.db.write() as conn:
        await Usage(conn).set_limits(tenant, limits, datetime.now(UTC))
    audit_line(
        "tenant.quota_set", setter.key_id if setter else OPERATOR, tenant=tenant,
        max_bytes=limits.max_bytes, max_files=limits.max_files,
        max_daily_bytes=limits.max_daily_bytes,
    )  # fmt: skip
    return await tenant_usage(services, tenant)
