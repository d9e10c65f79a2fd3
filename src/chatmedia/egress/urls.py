"""Reading a source URL the way the fetcher will use it.

A URL must first match `URL_PATTERN`, the same pattern the OpenAPI document gives every
URL field, so that the document says exactly which URLs the server takes: an absolute
http(s) URI (RFC 3986) in ASCII, its host a DNS name (an internationalized one in its
`xn--` form), an IPv4 address in any spelling the resolver reads ("127.1",
"2130706433") or a bracketed IPv6 address, an optional port from 1 to 65535, no user
information. It is then parsed once, by httpx (the client that will send the request),
and the host it yields is the host that is resolved, checked and connected to.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatmedia.egress.policy import IPAddress, normalize_host
from chatmedia.errors import InvalidSourceUrl

if TYPE_CHECKING:
    import httpx  # imported where it is used, as in chatmedia.egress.fetcher

MAX_URL_LENGTH = 8192
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _url_pattern() -> str:
    """The regular expression of an acceptable URL: no lookaround or backreference, so
    that JSON Schema validators and generators of any language read it alike."""
    octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    ipv4 = rf"{octet}(?:\.{octet}){{3}}"
    # Exactly four numeric labels are read as an IPv4 address and must be one; other
    # numeric forms ("127.1", "2130706433") go to the resolver as they are.
    number = "[0-9]+"
    numeric = rf"{number}(?:\.{number}){{0,2}}|{number}(?:\.{number}){{4,}}"
    label = "[A-Za-z0-9_-]+"
    named = rf"(?:{label}\.)*[A-Za-z0-9_-]*[A-Za-z_-][A-Za-z0-9_-]*(?:\.{label})*"
    # RFC 3986 §3.2.2 IPv6address, as its ABNF lists the forms.
    h16 = "[0-9A-Fa-f]{1,4}"
    ls32 = f"(?:{h16}:{h16}|{ipv4})"
    ipv6 = "|".join(
        [
            f"(?:{h16}:){{6}}{ls32}",
            f"::(?:{h16}:){{5}}{ls32}",
            f"(?:{h16})?::(?:{h16}:){{4}}{ls32}",
            f"(?:(?:{h16}:){{0,1}}{h16})?::(?:{h16}:){{3}}{ls32}",
            f"(?:(?:{h16}:){{0,2}}{h16})?::(?:{h16}:){{2}}{ls32}",
            f"(?:(?:{h16}:){{0,3}}{h16})?::{h16}:{ls32}",
            f"(?:(?:{h16}:){{0,4}}{h16})?::{ls32}",
            f"(?:(?:{h16}:){{0,5}}{h16})?::{h16}",
            f"(?:(?:{h16}:){{0,6}}{h16})?::",
        ]
    )
    host = rf"(?:{ipv4}|(?:{named}|{numeric})\.?|{ipv4}\.|\[(?:{ipv6})\])"
    port = "(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}"
    port += "|[1-9][0-9]{0,3}))?"
    # Path, query and fragment: RFC 3986's characters (brackets too, which httpx leaves
    # in place), percent-encodings complete.
    rest = r"(?:[/?#](?:[A-Za-z0-9._~!$&'()*+,;=:@/?#\[\]-]|%[0-9A-Fa-f]{2})*)?"
    return f"^[Hh][Tt][Tt][Pp][Ss]?://{host}{port}{rest}$"


URL_PATTERN = _url_pattern()
_URL = re.compile(URL_PATTERN)


@dataclass(frozen=True, slots=True)
class SourceUrl:
    """An absolute http(s) URL to fetch, with its host and port made explicit."""

    url: httpx.URL
    host: str
    port: int

    @property
    def origin(self) -> tuple[str, str, int]:
        """Scheme, host and port: credentials never cross from one origin to another."""
        return (self.url.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        """The Host header value for this URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.url.scheme] else f"{host}:{self.port}"

    @property
    def ip_literal(self) -> IPAddress | None:
        """The address when the host is written as one."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def join(self, location: str) -> SourceUrl:
        """The URL a redirect's Location names, read by the same rules."""
        import httpx

        try:
            joined = str(self.url.join(location))
        except httpx.InvalidURL:
            raise InvalidSourceUrl("a redirect names an invalid URL") from None
        return parse_source_url(joined)


def parse_source_url(text: str) -> SourceUrl:
    """Parse and check a URL; raises InvalidSourceUrl."""
    if not isinstance(text, str) or len(text) > MAX_URL_LENGTH or not _URL.fullmatch(text):
        raise InvalidSourceUrl(
            "the source URL must be an absolute http(s) URL in ASCII, without user"
            f" information, at most {MAX_URL_LENGTH} characters"
        )
    import httpx

    try:
        url = httpx.URL(text)
        host = normalize_host(url.raw_host.decode("ascii"))
    except (httpx.InvalidURL, UnicodeDecodeError):
        raise InvalidSourceUrl("the source URL is not a valid URL") from None
    if url.scheme not in _DEFAULT_PORTS or not host:
        raise InvalidSourceUrl("the source URL must be an absolute http(s) URL")
    if url.userinfo:
        raise InvalidSourceUrl("the source URL must not carry user information")
    port = _DEFAULT_PORTS[url.scheme] if url.port is None else url.port
    if not 0 < port < 65536:
        raise InvalidSourceUrl("the source URL has an invalid port")
    return SourceUrl(url=url, host=host, port=port)
