"""Settings: one frozen object, built once at start from CHATMEDIA_* environment variables
and an optional TOML file (the environment wins), validated with messages that name the key
and the bad value.

Each field of `Settings` is described in `FIELDS` with its default; `chatmedia config` prints
the effective values and where each came from.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from chatmedia.config_fields import FIELDS
from chatmedia.egress.credentials import ChannelProfile, parse_channel
from chatmedia.egress.policy import (
    FetchPolicy,
    IPNetwork,
)
from chatmedia.fairuse.limiter import LimitSettings
from chatmedia.fairuse.rates import Rate
from chatmedia.mediatypes import TypePolicy
from chatmedia.storage.s3url import parse_s3_url

ENV_PREFIX = "CHATMEDIA_"
CHANNELS_KEY = "channels"
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
    storage_url: str | None
    s3_redirect_downloads: bool
    accel_redirect: str | None
    max_upload_size: int
    allowed_types: tuple[str, ...]
    blocked_types: tuple[str, ...]
    retention: timedelta | None
    retention_interval: timedelta
    workers: int
    io_threads: int
    cache_files: int
    log_level: str
    import_allow_networks: tuple[IPNetwork, ...]
    import_allow_hosts: tuple[str, ...]
    import_ports: tuple[tuple[int, int], ...]
    import_proxy: str | None
    import_connect_timeout: float
    import_read_timeout: float
    import_deadline: float
    webhook_retry_base: float
    webhook_timeout: float
    events_token_ttl: timedelta
    event_retention: timedelta
    url_ttl: timedelta
    url_signing_keys: tuple[bytes, ...]
    compat_download: str
    compat_upload: str
    compat_upload_tenant: str
    cors_origins: tuple[str, ...]
    rate_limit: Rate | None
    anon_rate_limit: Rate | None
    auth_failure_limit: int | None
    trusted_proxies: tuple[IPNetwork, ...]
    quota_bytes: int | None
    quota_files: int | None
    quota_daily_bytes: int | None
    clamav_url: str | None
    clamav_timeout: float
    scan_inline_timeout: float
    scan_max_size: int
    scan_fail: str
    scan_keep_infected: bool
    rescan_window: timedelta
    rescan_rate: int
    rescan_check_interval: timedelta
    strip_metadata: str
    media_processing: bool
    max_image_pixels: int
    media_workers: int
    media_memory: int
    media_timeout: float
    media_inline_timeout: float
    upload_expiry: timedelta
    ui_frame_ancestors: tuple[str, ...]
    channels: Mapping[str, ChannelProfile]

    @property
    def type_policy(self) -> TypePolicy:
        """The allow/block policy for stored content types."""
        return TypePolicy(allowed=self.allowed_types, blocked=self.blocked_types)

    @property
    def fetch_policy(self) -> FetchPolicy:
        """Where imports may fetch from, and how long they may take."""
        return FetchPolicy(
            allow_networks=self.import_allow_networks,
            allow_hosts=self.import_allow_hosts,
            ports=self.import_ports,
            proxy=self.import_proxy,
            connect_timeout=self.import_connect_timeout,
            read_timeout=self.import_read_timeout,
            deadline=self.import_deadline,
        )

    @property
    def limit_settings(self) -> LimitSettings:
        """The request limits of each node."""
        return LimitSettings(
            key_rate=self.rate_limit,
            anonymous_rate=self.anon_rate_limit,
            auth_failures=self.auth_failure_limit,
            trusted_proxies=self.trusted_proxies,
        )

    @property
    def scan_fail_open(self) -> bool:
        """Whether files whose scan ended in an error are served (CHATMEDIA_SCAN_FAIL)."""
        return self.scan_fail == "open"

    @property
    def blob_dir(self) -> Path:
        """Where the local blob store keeps content."""
        return self.data_dir / "blobs"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - set(FIELDS) - {CHANNELS_KEY})
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
    env = os.environ if env is None else env
    raw = collect(env, cwd)
    values: dict[str, Any] = {}
    for name, (text, source) in raw.items():
        try:
            values[name] = FIELDS[name].parse(text)
        except ValueError as e:
            where = source.removeprefix("env ") if source.startswith("env ") else source
            shown = _hide(text) if FIELDS[name].secret else text
            raise ConfigError(f"{where} has value '{shown}': {e}") from None
    values.setdefault("public_url", f"http://{values['host']}:{values['port']}")
    values.setdefault("database_url", "sqlite:///" + str(values["data_dir"] / "chatmedia.db"))
    _check_storage(values, env)
    path = _config_file(env, cwd or Path.cwd())
    table = _read_toml(path).get(CHANNELS_KEY, {}) if path else {}
    values["channels"] = _channels(table, path)
    return Settings(**values)


def _check_storage(values: Mapping[str, Any], env: Mapping[str, str]) -> None:
    url = values["storage_url"]
    if url is not None and values["accel_redirect"] is not None:
        raise ConfigError(
            f"{ENV_PREFIX}ACCEL_REDIRECT serves local blobs through nginx: it needs the local"
            f" store ({ENV_PREFIX}STORAGE_URL empty)"
        )
    if url is not None:
        try:
            parse_s3_url(url, env)
        except ValueError as e:
            raise ConfigError(f"{ENV_PREFIX}STORAGE_URL is not usable: {e}") from None
    elif values["s3_redirect_downloads"]:
        raise ConfigError(
            f"{ENV_PREFIX}S3_REDIRECT_DOWNLOADS needs an S3 store: set {ENV_PREFIX}STORAGE_URL"
        )


def _channels(table: Any, path: Path | None) -> Mapping[str, ChannelProfile]:
    """The `[channels.<name>]` tables: allowHosts, apiKey360, oauth, headers."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path} key {CHANNELS_KEY} must be a table of channel tables")
    profiles = {}
    for name, spec in table.items():
        where = f"{path} table [{CHANNELS_KEY}.{name}]"
        try:
            profiles[name] = parse_channel(spec)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    return MappingProxyType(profiles)


def describe(
    settings: Settings, env: Mapping[str, str] | None = None
) -> list[tuple[str, str, str]]:
    """(key, shown value, source) for each setting, with secrets hidden."""
    sources = {name: source for name, (_, source) in collect(env).items()}
    rows = []
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name == CHANNELS_KEY:
            shown = ",".join(sorted(value)) or "(none)"
            rows.append((ENV_PREFIX + "CHANNELS", shown, "config file"))
            continue
        if FIELDS[f.name].secret and isinstance(value, tuple):  # keys, never shown
            count = f"{len(value)} key" + ("s" if len(value) > 1 else "")
            shown = f"({count})" if value else "(generated, in the database)"
        elif FIELDS[f.name].secret and value is not None:
            shown = _hide(str(value))
        else:
            shown = _show(f.name, value)
        rows.append((ENV_PREFIX + f.name.upper(), shown, sources.get(f.name, "derived")))
    return rows


def _range(ports: tuple[int, int]) -> str:
    return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"


_NONE_SHOWN = {"retention": "forever", "quota_bytes": "unlimited", "quota_files": "unlimited",
               "quota_daily_bytes": "unlimited"}  # fmt: skip


def _show(name: str, value: object) -> str:
    if isinstance(value, tuple):
        items = [_range(v) if isinstance(v, tuple) else str(v) for v in value]
        return ",".join(items) or ("(any)" if name == "allowed_types" else "(none)")
    if isinstance(value, timedelta):
        return f"{int(value.total_seconds())}s"
    if value is None:
        return _NONE_SHOWN.get(name, "off" if name.endswith("limit") else "(none)")
    return str(value)


# Query parameters of a URL setting whose values are secrets.
_SECRET_PARAMETERS = re.compile(r"(?i)((?:secret|token|password)[a-z_]*=)[^&]*")


def _hide(text: str) -> str:
    """A secret setting's text as it may be shown: a URL without its secrets, else ***."""
    return hide_secrets(text) if "://" in text else "***"


def hide_secrets(url: str) -> str:
    """`url` with its password and secret query values (a storage URL's secret key and
    session token), if any, replaced by ***."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not even a URL: show nothing of it
        return "***"
    if password is not None:
        url = url.replace(":" + password + "@", ":***@", 1)
    return _SECRET_PARAMETERS.sub(r"\1***", url) if parts.query else url
