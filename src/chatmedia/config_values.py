"""Parsers of single setting values: each takes the text a setting was given and returns
its value, or raises ValueError saying what is wrong (chatmedia.config names the key)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

from chatmedia.access.principal import is_tenant
from chatmedia.scanning.clamd import parse_url as parse_clamd_url
from chatmedia.units import parse_duration, parse_size


def port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError("not a TCP port")
    return port


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("not an absolute http(s) URL")
    return urlunsplit(parts).rstrip("/")


def retention(text: str) -> timedelta | None:
    if text.strip().lower() in ("", "0", "forever", "never"):
        return None
    return parse_duration(text)


def interval(text: str) -> timedelta:
    value = parse_duration(text)
    if value < timedelta(seconds=1):
        raise ValueError("must be at least 1s")
    return value


# Database URL schemes, and the SQLAlchemy driver each one is served by.
_DATABASE_DRIVERS = {
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",  # as written by earlier versions
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def database_url(text: str) -> str:
    scheme, sep, rest = text.strip().partition("://")
    driver = _DATABASE_DRIVERS.get(scheme.lower())
    if not sep or driver is None:
        raise ValueError("not a sqlite:///PATH or postgresql://USER@HOST/NAME URL")
    if driver.startswith("postgresql") and not rest.partition("/")[0]:
        raise ValueError("a PostgreSQL URL needs a host")
    return f"{driver}://{rest}"


def storage_url(text: str) -> str | None:
    """Only the scheme here; the rest is read with the environment in `load_settings`."""
    text = text.strip()
    if text.lower() in ("", "local"):
        return None
    if not text.lower().startswith("s3://"):
        raise ValueError("not an s3://BUCKET/PREFIX URL (or empty, for DATA_DIR/blobs)")
    return text


def log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError("not one of debug, info, warning, error")
    return level


def seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise ValueError("must be a number of seconds above 0, at most 3600")
    return value


def wait(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 3600:
        raise ValueError("must be a number of seconds from 0 to 3600")
    return value


def choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def tenant(text: str) -> str:
    if not is_tenant(text.strip()):
        raise ValueError("not a tenant name (1-64 letters, digits, '.', '_' or '-')")
    return text.strip()


def origins(text: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ValueError(f"{origin} is not an origin such as https://desk.example.com")
    return origins


def frame_ancestors(text: str) -> tuple[str, ...]:
    """CSP frame-ancestors sources: origins (a host may start with '*.'), or 'self'; empty
    or 'none': no page may frame ours."""
    items = [t.strip().strip("'") for t in re.split(r"[,\s]+", text) if t.strip()]
    if items == ["none"]:
        return ()
    sources = []
    for item in items:
        if item == "self":
            sources.append("'self'")
            continue
        parts = urlsplit(item.rstrip("/"))
        if (
            parts.scheme not in ("http", "https")
            or not re.fullmatch(r"(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?", parts.netloc)
            or parts.path
            or parts.query
            or parts.fragment
        ):
            raise ValueError(f"{item} is not 'self' nor an origin such as https://desk.example.com")
        sources.append(item.rstrip("/"))
    return tuple(sources)


def url_ttl(text: str) -> timedelta:
    value = interval(text)
    if value > timedelta(days=7):
        raise ValueError("must be at most 7d")
    return value


def signing_keys(text: str) -> tuple[bytes, ...]:
    keys = tuple(k.strip().encode() for k in text.split(",") if k.strip())
    if any(len(k) < 16 for k in keys):
        raise ValueError("each key needs at least 16 characters")
    return keys


def proxy(text: str) -> str | None:
    return url(text) if text.strip() else None


def clamav_url(text: str) -> str | None:
    """clamd's address (tcp://HOST:PORT or unix:///path), or None (empty: no scanning)."""
    text = text.strip()
    if not text:
        return None
    parse_clamd_url(text)
    return text


def accel_prefix(text: str) -> str | None:
    """A location prefix such as /internal-blobs/, or None (empty)."""
    text = text.strip()
    if not text:
        return None
    if not re.fullmatch(r"/(?:(?!\.+/)[A-Za-z0-9._-]+/)+", text):  # no . or .. segment
        raise ValueError("must be a path that starts and ends with '/', such as /internal-blobs/")
    return text


UNLIMITED = ("", "unlimited", "none", "off")


def limit_count(text: str) -> int | None:
    """A count of at least 1, or None for `off`."""
    return None if text.strip().lower() in UNLIMITED else positive_int(text)


def quota_size(text: str) -> int | None:
    """A size (10GiB), or None for unlimited."""
    return None if text.strip().lower() in UNLIMITED else parse_size(text)


def quota_count(text: str) -> int | None:
    """A number of files, or None for unlimited."""
    if text.strip().lower() in UNLIMITED:
        return None
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value
