"""Tables, in SQLAlchemy Core. Migrations under db/migrations create exactly these; a test
compares the two."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone, so it is added back)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# The migration (db/migrations/versions) that creates exactly these tables.
SCHEMA_REVISION = "0011"

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# One row per stored content; files reference it. The row is the lock that makes dedup and
# deletion race-free (see chatmedia.pipelines.files).
blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # What the scanner said of these bytes (chatmedia.scanning): null when scanning was off
    # as they were stored; pending, clean, infected, error or skipped. `scan_version` is
    # the scanner's signature version then, so that new signatures rescan recent blobs.
    sa.Column("scan_status", sa.String(16), nullable=True),
    sa.Column("scan_signature", sa.Text, nullable=True),
    sa.Column("scanned_at", UTCDateTime, nullable=True),
    sa.Column("scan_version", sa.Text, nullable=True),
    # What the bytes are as media (chatmedia.media): null when they are not media; its
    # JSON the fields and previews once found (chatmedia.db.media).
    sa.Column("media_status", sa.String(16), nullable=True),
    sa.Column("media", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("metadata_stripped", sa.Boolean, nullable=True),
    sa.Index(None, "scan_status", "created_at"),
)

files = sa.Table(
    "files",
    metadata,
    # Insertion order, for stable newest-first pages; never shown to clients.
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("stored_name", sa.Text, nullable=False, unique=True),
    sa.Column("content_type", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), sa.ForeignKey("blobs.sha256"), nullable=True),
    # Where an EXTERNAL file is; HOSTED files have their blob instead.
    sa.Column("url", sa.Text, nullable=True),
    sa.Column("conversation_id", sa.Text, nullable=True),
    sa.Column("properties", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # Every file, message, event and webhook belongs to one tenant (chatmedia.access).
    sa.Column("tenant", sa.String(64), nullable=False),
    # Signed links carry it: raising it ends every earlier link of the file.
    sa.Column("link_generation", sa.Integer, nullable=False),
    sa.Index(None, "tenant", "conversation_id", "seq"),
    sa.Index(None, "tenant", "seq"),
    sa.Index(None, "sha256"),
    sa.Index(None, "created_at"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    # What the key may do (chatmedia.access.principal): its scopes, its tenant (null: none
    # of its own, the default one), its conversation restriction (null: any), its expiry.
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("tenant", sa.String(64), nullable=True),
    # None is SQL NULL (no JSON to decode on every request).
    sa.Column("conversations", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    # To the minute, written in batches: never a write per request.
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    # The key's own request rate ("50/s"; null: CHATMEDIA_RATE_LIMIT).
    sa.Column("rate_limit", sa.String(32), nullable=True),
)

_SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("seq", _SEQ, primary_key=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("conversation_id", sa.Text, nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("body", sa.Text, nullable=True),
    # No foreign key: a message outlives its file, which then shows as null.
    sa.Column("file_id", sa.String(32), nullable=True),
    sa.Column("group_tag", sa.Text, nullable=True),
    sa.Column("properties", sa.JSON, nullable=False),
    sa.Column("sender", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Index(None, "tenant", "conversation_id", "seq"),
    sa.Index(None, "file_id"),
)

# The event log: its seq is the event id that SSE clients resume from. Written in the same
# transaction as the change it records.
events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", _SEQ, primary_key=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("conversation_id", sa.Text, nullable=True),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Index(None, "tenant", "conversation_id", "seq"),
    sa.Index(None, "tenant", "seq"),
    sa.Index(None, "created_at"),
    # Ids only ever grow, even once the newest events are erased or pruned: SQLite would
    # otherwise give the next event an id a client has already seen, and skip it.
    sqlite_autoincrement=True,
)

webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("events", sa.JSON, nullable=False),
    # Kept to sign deliveries; shown to the client once, when the webhook is created.
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Index(None, "tenant"),
)

# The outbox: one row per event and webhook, written with the event. Rows of one queue (a
# webhook and a conversation) are delivered in event order.
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("seq", _SEQ, primary_key=True),
    sa.Column(
        "webhook_id",
        sa.String(32),
        sa.ForeignKey("webhooks.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("event_seq", sa.BigInteger, sa.ForeignKey("events.seq"), nullable=False),
    sa.Column("queue", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # For the claim (chatmedia.db.webhooks.Outbox): the oldest pending deliveries in order,
    # and a queue's oldest pending one, or every queue's, by index seeks. Delivered rows,
    # however many, sort apart in both.
    sa.Index(None, "status", "event_seq"),
    sa.Index(None, "status", "webhook_id", "queue", "event_seq"),
    sa.Index(None, "webhook_id", "seq"),
    # For deleting events (pruning, erasure): their deliveries go first, found by event,
    # and the foreign key is checked by event.
    sa.Index(None, "event_seq"),
)

# Answers kept for retries that carry the same Idempotency-Key, per API key.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("scope", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=True),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("headers", sa.JSON, nullable=True),
    sa.Column("body", sa.LargeBinary, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("completed_at", UTCDateTime, nullable=True),
    # The id (or file-engine name) of what the answer created: erasing it erases the replay.
    sa.Column("resource", sa.Text, nullable=True),
    sa.Index(None, "created_at"),
    sa.Index(None, "resource"),
)

# Secrets the server makes for itself (the key that signs event-stream URLs), shared by
# every node through the database.
server_secrets = sa.Table(
    "server_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# A tenant's own quotas (chatmedia.fairuse.quotas): a row overrides the CHATMEDIA_QUOTA_*
# defaults wholly; a null column is unlimited.
tenant_quotas = sa.Table(
    "tenant_quotas",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("max_bytes", sa.BigInteger, nullable=True),
    sa.Column("max_files", sa.BigInteger, nullable=True),
    sa.Column("max_daily_bytes", sa.BigInteger, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# What each tenant holds, kept in the transactions that add and remove its files; and what
# its uploads under way have reserved. The row is the lock that makes quotas exact.
tenant_usage = sa.Table(
    "tenant_usage",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("files", sa.BigInteger, nullable=False),
    # Bytes of the files added on `day` (days since 1970-01-01, UTC).
    sa.Column("day", sa.Integer, nullable=False),
    sa.Column("day_bytes", sa.BigInteger, nullable=False),
    sa.Column("reserved_bytes", sa.BigInteger, nullable=False),
    sa.Column("reserved_files", sa.BigInteger, nullable=False),
)

# One row per upload under way in a tenant with a quota; a crashed node's rows expire.
quota_reservations = sa.Table(
    "quota_reservations",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("files", sa.Integer, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index(None, "expires_at"),
)

# Work that follows a store (chatmedia.processing): one row per kind of work and subject (a
# blob's sha256), written in the transaction that makes the work needed. A claim moves
# `run_after` past the claim's lease, so a job whose worker died comes due again; it is
# deleted once done. Lower `priority` first.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("seq", _SEQ, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("subject", sa.String(64), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("run_after", UTCDateTime, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("kind", "subject"),
    sa.Index(None, "priority", "run_after"),
)

# What the scanner found: an upload refused (file_id null) or a stored file found infected
# later. The sha256 refuses the same bytes at once; an admin may release a stored file.
quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("seq", _SEQ, primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=True),
    sa.Column("file_id", sa.String(32), nullable=True),
    # Whether the bytes are still stored (under their sha256) for inspection.
    sa.Column("blob_kept", sa.Boolean, nullable=False),
    sa.Column("detected_at", UTCDateTime, nullable=False),
    sa.Column("released_at", UTCDateTime, nullable=True),
    sa.Column("released_by", sa.String(32), nullable=True),
    sa.Index(None, "sha256"),
    sa.Index(None, "tenant", "seq"),
)

# Small facts the nodes share, such as the scanner signature version last acted on.
service_state = sa.Table(
    "service_state",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# Resumable uploads under way (tus, chatmedia.uploads). The id is the File's to be. The
# offset moves only by a compare-and-set of the writer's `generation`, which a writer
# takes (and with it a short lease, renewed as its bytes arrive) before it writes.
uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("conversation_id", sa.Text, nullable=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("properties", sa.JSON, nullable=False),
    # Null until the client says (creation-defer-length).
    sa.Column("length", sa.BigInteger, nullable=True),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index(None, "expires_at"),
)

# The segments of an upload under way, in order: each written by one claim, in the store's
# piece `name` (its own, or on local disk the end of the one before it; see
# chatmedia.storage.Segments), so that a writer that lost its claim can never overwrite a
# segment that counts.
upload_segments = sa.Table(
    "upload_segments",
    metadata,
    sa.Column("upload_id", sa.String(32), primary_key=True),
    sa.Column("start", sa.BigInteger, primary_key=True),
    sa.Column("length", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
)
