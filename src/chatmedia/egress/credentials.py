"""Credentials sent to a source: a 360dialog API key, an OAuth bearer token (given, or
obtained with client credentials) and extra headers. None of them is ever stored with a
file, logged, shown in an error, or sent to another origin after a redirect; their reprs
hide the secrets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from chatmedia.egress.policy import normalize_host

D360_HEADER = "D360-API-KEY"
MAX_HEADERS = 20
MAX_HEADER_VALUE = 4096
# Published as the OpenAPI patterns of these fields. A header name is an RFC 9110 §5.6.2
# token; a value visible ASCII, spaces and tabs (§5.5, without the obsolete bytes); a
# credential (a key, a token, a client id or secret) visible ASCII and not blank.
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
HEADER_VALUE_PATTERN = r"^[\t\x20-\x7e]*$"
CREDENTIAL_PATTERN = r"^[\x20-\x7e]*[\x21-\x7e][\x20-\x7e]*$"
_TOKEN = re.compile(HEADER_NAME_PATTERN)
_VALUE = re.compile(HEADER_VALUE_PATTERN)
_CREDENTIAL = re.compile(CREDENTIAL_PATTERN)
# Headers the fetcher sets itself.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "accept-encoding", "te",
     "upgrade", "proxy-authorization", "keep-alive", "trailer"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """OAuth 2.0 client credentials (RFC 6749 §4.4)."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class SourceCredentials:
    """What to authenticate to a source with; each kind is optional."""

    api_key_360: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    client_credentials: ClientCredentials | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def overridden_by(self, other: SourceCredentials) -> SourceCredentials:
        """These credentials with each kind `other` has replaced by `other`'s; headers are
        merged, `other`'s winning."""
        oauth_given = other.access_token is not None or other.client_credentials is not None
        merged = {k.lower(): (k, v) for k, v in self.headers}
        merged |= {k.lower(): (k, v) for k, v in other.headers}
        return replace(
            self,
            api_key_360=other.api_key_360 or self.api_key_360,
            access_token=other.access_token if oauth_given else self.access_token,
            client_credentials=other.client_credentials if oauth_given else self.client_credentials,
            headers=tuple(merged.values()),
        )


@dataclass(frozen=True, slots=True)
class ChannelProfile:
    """A `[channels.<name>]` table of the configuration file: the hosts the channel fetches
    from (empty: any) and its credentials."""

    allow_hosts: tuple[str, ...] = ()
    credentials: SourceCredentials = field(default_factory=SourceCredentials)


def parse_channel(spec: Any) -> ChannelProfile:
    """A `[channels.<name>]` table: allowHosts, apiKey360, oauth, headers."""
    if not isinstance(spec, Mapping):
        raise ValueError("must be a table")
    unknown = set(spec) - {"allowHosts", "apiKey360", "oauth", "headers"}
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
    hosts = spec.get("allowHosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h.strip() for h in hosts):
        raise ValueError("allowHosts must be a list of host names")
    token, client = parse_oauth(spec["oauth"]) if "oauth" in spec else (None, None)
    credentials = SourceCredentials(
        api_key_360=_text(spec, "apiKey360", "channel") if "apiKey360" in spec else None,
        access_token=token,
        client_credentials=client,
        headers=parse_headers(spec["headers"]) if "headers" in spec else (),
    )
    return ChannelProfile(
        allow_hosts=tuple(normalize_host(h) for h in hosts), credentials=credentials
    )


def parse_oauth(value: Any) -> tuple[str | None, ClientCredentials | None]:
    """`{"accessToken"}` or `{"tokenUrl", "clientId", "clientSecret", "scope"}` into an
    access token or client credentials. Raises ValueError naming the key, never a value."""
    if not isinstance(value, Mapping):
        raise ValueError("oauth must be an object")
    unknown = set(value) - {"accessToken", "tokenUrl", "clientId", "clientSecret", "scope"}
    if unknown:
        raise ValueError(f"oauth has unknown keys: {', '.join(sorted(unknown))}")
    if "accessToken" in value:
        return _text(value, "accessToken", "oauth"), None
    missing = [k for k in ("tokenUrl", "clientId", "clientSecret") if k not in value]
    if missing:
        raise ValueError(f"oauth needs accessToken, or tokenUrl, clientId and clientSecret "
                         f"(missing: {', '.join(missing)})")  # fmt: skip
    scope = _text(value, "scope", "oauth") if "scope" in value else None
    return None, ClientCredentials(
        token_url=_text(value, "tokenUrl", "oauth"),
        client_id=_text(value, "clientId", "oauth"),
        client_secret=_text(value, "clientSecret", "oauth"),
        scope=scope,
    )


def parse_headers(value: Any) -> tuple[tuple[str, str], ...]:
    """A small map of extra request headers; raises ValueError naming a bad header."""
    if not isinstance(value, Mapping):
        raise ValueError("headers must be an object of header names to values")
    if len(value) > MAX_HEADERS:
        raise ValueError(f"headers may name at most {MAX_HEADERS} headers")
    headers = []
    for name, text in value.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError("headers has a name that is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"headers may not set {name}")
        if not isinstance(text, str) or len(text) > MAX_HEADER_VALUE or not _VALUE.fullmatch(text):
            raise ValueError(f"headers has an invalid value for {name}")
        headers.append((name, text))
    return tuple(headers)


def is_credential(text: object) -> bool:
    """True for a credential that can go into a request header: visible ASCII, not blank."""
    return isinstance(text, str) and _CREDENTIAL.fullmatch(text) is not None


def _text(value: Mapping[str, Any], key: str, where: str) -> str:
    text = value[key]
    if not is_credential(text):
        raise ValueError(f"{where}.{key} must be a non-blank string of visible ASCII")
    return str(text).strip()
