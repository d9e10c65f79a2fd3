"""The settings' table: for each field of `chatmedia.config.Settings`, its parser, its
default and what it means."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatmedia.config_values import (
    accel_prefix,
    choice,
    clamav_url,
    count,
    database_url,
    frame_ancestors,
    interval,
    limit_count,
    log_level,
    origins,
    port,
    positive_int,
    proxy,
    quota_count,
    quota_size,
    retention,
    seconds,
    signing_keys,
    storage_url,
    tenant,
    url,
    url_ttl,
    wait,
)
from chatmedia.egress.policy import parse_hosts, parse_networks, parse_ports
from chatmedia.fairuse.rates import parse_limit
from chatmedia.mediatypes import parse_type_list
from chatmedia.units import parse_bool, parse_size


@dataclass(frozen=True, slots=True)
class Field:
    """How one setting is read: its parser, its default (as text, parsed like any value, or
    derived from other settings when None) and what it means."""

    parse: Callable[[str], Any]
    default: str | None
    doc: str
    secret: bool = False


FIELDS: dict[str, Field] = {
    "data_dir": Field(
        lambda t: Path(t).expanduser(), "./data", "Folder for the database and blobs."
    ),
    "host": Field(str.strip, "127.0.0.1", "Address the server listens on."),
    "port": Field(port, "8080", "TCP port the server listens on."),
    "public_url": Field(
        url, None, "Base of the URLs the API hands out (default http://HOST:PORT)."
    ),
    "database_url": Field(
        database_url, None, "Metadata database (default sqlite:///DATA_DIR/chatmedia.db).", True
    ),
    "storage_url": Field(
        storage_url,
        "",
        "Blob store: empty for DATA_DIR/blobs, or s3://BUCKET/PREFIX?endpoint=…&region=….",
        True,
    ),
    "s3_redirect_downloads": Field(
        parse_bool, "false", "Answer content requests with a 307 to a presigned S3 URL."
    ),
    "accel_redirect": Field(
        accel_prefix, "", "nginx internal location of DATA_DIR/blobs/: downloads leave Python."
    ),
    "max_upload_size": Field(
        parse_size, "5MiB", "Largest file accepted: bytes, or with kB/MB/GB or KiB/MiB/GiB."
    ),
    "allowed_types": Field(
        parse_type_list, "", "Comma-separated MIME patterns or extensions; empty allows all."
    ),
    "blocked_types": Field(
        parse_type_list, "", "Comma-separated MIME patterns or extensions refused always."
    ),
    "retention": Field(retention, "forever", "Delete files older than this (e.g. 30d)."),
    "retention_interval": Field(interval, "10m", "How often the retention sweeper runs."),
    "workers": Field(positive_int, "1", "Server worker processes."),
    "io_threads": Field(positive_int, "2", "Network I/O threads per worker process."),
    "cache_files": Field(count, "4096", "File records each worker keeps in memory (0: none)."),
    "log_level": Field(log_level, "info", "debug, info, warning or error."),
    "import_allow_networks": Field(
        parse_networks, "", "CIDRs imports may reach although private (e.g. 10.1.0.0/16)."
    ),
    "import_allow_hosts": Field(
        parse_hosts, "", "Host names imports may reach whatever their addresses."
    ),
    "import_ports": Field(parse_ports, "80,443,8080,8443", "Ports imports may connect to."),
    "import_proxy": Field(
        proxy, "", "Proxy for imports (environment proxy variables are ignored).", True
    ),
    "import_connect_timeout": Field(seconds, "10", "Seconds to connect to a source."),
    "import_read_timeout": Field(seconds, "30", "Seconds a source may stay silent."),
    "import_deadline": Field(seconds, "60", "Seconds an import may take in all."),
    "webhook_retry_base": Field(
        seconds, "5", "Seconds before a failed webhook delivery's first retry (then doubling)."
    ),
    "webhook_timeout": Field(seconds, "10", "Seconds a webhook receiver has to answer."),
    "events_token_ttl": Field(interval, "15m", "How long a signed event-stream URL works."),
    "event_retention": Field(
        interval, "7d", "How long events are kept for clients that resume a stream."
    ),
    "url_ttl": Field(
        url_ttl, "24h", "How long a signed file URL works from when it is sent (at most 7d)."
    ),
    "url_signing_keys": Field(
        signing_keys,
        "",
        "Comma-separated secrets (16+ characters) that sign file URLs: the first signs, all"
        " are accepted. Empty: one is generated and kept in the database.",
        True,
    ),
    "compat_download": Field(
        choice("open", "signed", "key"),
        "open",
        "File-engine downloads: open (by name, guessable), signed (a signed URL) or key.",
    ),
    "compat_upload": Field(
        choice("key", "open"),
        "key",
        "File-engine uploadFileStream: key, or open to browsers' widgets (no key needed).",
    ),
    "compat_upload_tenant": Field(
        tenant, "default", "The tenant of uploads made without a key (COMPAT_UPLOAD=open)."
    ),
    "cors_origins": Field(
        origins, "", "Comma-separated origins whose pages may call the API (CORS)."
    ),
    "rate_limit": Field(
        parse_limit, "1000/s", "Requests per key (N/s, N/min, N/h; burst 2N), or off."
    ),
    "anon_rate_limit": Field(
        parse_limit, "100/s", "Requests per client address on routes open without a key, or off."
    ),
    "auth_failure_limit": Field(
        limit_count, "20", "Failed authentications per address a minute before a lockout, or off."
    ),
    "trusted_proxies": Field(
        parse_networks, "", "CIDRs of reverse proxies whose X-Forwarded-For is believed."
    ),
    "quota_bytes": Field(quota_size, "unlimited", "Bytes each tenant may store (default)."),
    "quota_files": Field(quota_count, "unlimited", "Files each tenant may hold (default)."),
    "quota_daily_bytes": Field(
        quota_size, "unlimited", "Bytes each tenant may add per day, UTC (default)."
    ),
    "clamav_url": Field(
        clamav_url,
        "",
        "clamd to scan every new file with: tcp://HOST:PORT or unix:///path (empty: no scanning).",
    ),
    "clamav_timeout": Field(seconds, "60", "Seconds clamd may take over one scan."),
    "scan_inline_timeout": Field(
        wait, "5", "Seconds an upload waits for its scan before answering with it pending."
    ),
    "scan_max_size": Field(
        parse_size, "100MiB", "Files larger than this are not scanned (match StreamMaxLength)."
    ),
    "scan_fail": Field(
        choice("closed", "open"), "closed", "open: serve files whose scan ended in an error."
    ),
    "scan_keep_infected": Field(
        parse_bool, "false", "Keep the bytes of uploads refused as infected, for inspection."
    ),
    "rescan_window": Field(
        interval, "7d", "Files this recent are scanned again when the signatures change."
    ),
    "rescan_rate": Field(positive_int, "20", "Files per second those scans go at, at most."),
    "rescan_check_interval": Field(
        interval, "1m", "How often clamd is asked for its signature version."
    ),
    "strip_metadata": Field(
        choice("location", "all", "off"),
        "location",
        "What is taken out of JPEG, PNG and WebP before they are stored: location, all, off.",
    ),
    "media_processing": Field(
        parse_bool, "true", "Find media fields and make previews of new files (false: none)."
    ),
    "max_image_pixels": Field(
        positive_int, "32000000", "Images with more pixels get no preview (never decoded)."
    ),
    "media_workers": Field(
        positive_int, "2", "Sandboxed processes each server worker decodes media in at once."
    ),
    "media_memory": Field(parse_size, "1GiB", "Address space each media process may use."),
    "media_timeout": Field(seconds, "30", "Seconds a media process may take."),
    "media_inline_timeout": Field(
        wait, "2", "Seconds an upload of an image waits for its previews (0: never waits)."
    ),
    "ui_frame_ancestors": Field(
        frame_ancestors,
        "none",
        "Origins whose pages may frame the agent's media page (CSP frame-ancestors), or none.",
    ),
    "upload_expiry": Field(
        interval, "24h", "A resumable upload untouched this long is removed with its bytes."
    ),
}
