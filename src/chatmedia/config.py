"""Settings: one frozen object, built once at start from CHATMEDIA_* environment variables
and an optional TOML file (the environment wins), validated with messages that name the key
and the bad value.

Each field of `Settings` is described in `FIELDS` with its default; `chatmedia config` prints
the effective values and where each came from.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from chatmedia.mediatypes import TypePolicy, parse_type_list
from chatmedia.units import parse_duration, parse_size

ENV_PREFIX = "CHATMEDIA_"
DEFAULT_CONFIG_FILE = "chatmedia.toml"


class ConfigError(Exception):
    """A setting has a value that cannot be used; the message names the key and value."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective configuration. Build it with `load_settings`, never at import time."""

    data_dir: Path
    host: str
    port: int
    public_url: str
    database_url: str
    max_upload_size: int
    allowed_types: tuple[str, ...]
    blocked_types: tuple[str, ...]
    retention: timedelta | None
    retention_interval: timedelta
    workers: int
    log_level: str

    @property
    def type_policy(self) -> TypePolicy:
        """The allow/block policy for stored content types."""
        return TypePolicy(allowed=self.allowed_types, blocked=self.blocked_types)

    @property
    def blob_dir(self) -> Path:
        """Where the local blob store keeps content."""
        return self.data_dir / "blobs"


@dataclass(frozen=True, slots=True)
class Field:
    """How one setting is read: its parser, its default (as text, parsed like any value, or
    derived from other settings when None) and what it means."""

    parse: Callable[[str], Any]
    default: str | None
    doc: str
    secret: bool = False


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError("not a TCP port")
    return port


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("not an absolute http(s) URL")
    return urlunsplit(parts).rstrip("/")


def _retention(text: str) -> timedelta | None:
    if text.strip().lower() in ("", "0", "forever", "never"):
        return None
    return parse_duration(text)


def _interval(text: str) -> timedelta:
    value = parse_duration(text)
    if value < timedelta(seconds=1):
        raise ValueError("must be at least 1s")
    return value


def _database_url(text: str) -> str:
    scheme = text.partition("://")[0]
    if scheme not in ("sqlite", "sqlite+aiosqlite"):
        raise ValueError("only sqlite:///PATH databases are supported")
    return "sqlite+aiosqlite://" + text.partition("://")[2]


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError("not one of debug, info, warning, error")
    return level


FIELDS: dict[str, Field] = {
    "data_dir": Field(
        lambda t: Path(t).expanduser(), "./data", "Folder for the database and blobs."
    ),
    "host": Field(str.strip, "127.0.0.1", "Address the server listens on."),
    "port": Field(_port, "8080", "TCP port the server listens on."),
    "public_url": Field(
        _url, None, "Base of the URLs the API hands out (default http://HOST:PORT)."
    ),
    "database_url": Field(
        _database_url, None, "Metadata database (default sqlite:///DATA_DIR/chatmedia.db).", True
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
    "retention": Field(_retention, "forever", "Delete files older than this (e.g. 30d)."),
    "retention_interval": Field(_interval, "10m", "How often the retention sweeper runs."),
    "workers": Field(_positive_int, "1", "Server worker processes."),
    "log_level": Field(_log_level, "info", "debug, info, warning or error."),
}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ConfigError(f"config file {path} has unknown keys: {', '.join(unknown)}")
    return data


def _config_file(env: Mapping[str, str], cwd: Path) -> Path | None:
    named = env.get(ENV_PREFIX + "CONFIG")
    if named:
        return Path(named)
    default = cwd / DEFAULT_CONFIG_FILE
    return default if default.is_file() else None


def collect(
    env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> dict[str, tuple[str, str]]:
    """The raw text of every setting and where it came from ("env", the file, "default").
    Derived defaults are left out; `load_settings` fills them in."""
    env = os.environ if env is None else env
    path = _config_file(env, cwd or Path.cwd())
    file_values = _read_toml(path) if path else {}
    raw: dict[str, tuple[str, str]] = {}
    for name, spec in FIELDS.items():
        env_key = ENV_PREFIX + name.upper()
        if env_key in env:
            raw[name] = (env[env_key], "env " + env_key)
        elif name in file_values:
            value = file_values[name]
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            raw[name] = (text, f"{path} key {name}")
        elif spec.default is not None:
            raw[name] = (spec.default, "default")
    return raw


def load_settings(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Build and validate the settings. Raises ConfigError naming the key and bad value."""
    raw = collect(env, cwd)
    values: dict[str, Any] = {}
    for name, (text, source) in raw.items():
        try:
            values[name] = FIELDS[name].parse(text)
        except ValueError as e:
            where = source.removeprefix("env ") if source.startswith("env ") else source
            raise ConfigError(f"{where} has value '{text}': {e}") from None
    values.setdefault("public_url", f"http://{values['host']}:{values['port']}")
    values.setdefault(
        "database_url", "sqlite+aiosqlite:///" + str(values["data_dir"] / "chatmedia.db")
    )
    return Settings(**values)


def describe(
    settings: Settings, env: Mapping[str, str] | None = None
) -> list[tuple[str, str, str]]:
    """(key, shown value, source) for each setting, with secrets hidden."""
    sources = {name: source for name, (_, source) in collect(env).items()}
    rows = []
    for f in fields(settings):
        value = getattr(settings, f.name)
        shown = hide_password(str(value)) if FIELDS[f.name].secret else _show(f.name, value)
        rows.append((ENV_PREFIX + f.name.upper(), shown, sources.get(f.name, "derived")))
    return rows


def _show(name: str, value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or ("(any)" if name == "allowed_types" else "(none)")
    if isinstance(value, timedelta):
        return f"{int(value.total_seconds())}s"
    if value is None:
        return "forever"
    return str(value)


def hide_password(url: str) -> str:
    """`url` with its password, if any, replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
