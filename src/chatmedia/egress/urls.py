"""Reading a source URL the way the fetcher will use it.

The URL is parsed once, by httpx (the client that will send the request), and the host
it yields is the host that is resolved, checked and connected to. Forms that parsers
disagree on are refused as invalid rather than interpreted: user info
("http://a@127.0.0.1"), backslashes, whitespace and control characters.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatmedia.egress.policy import IPAddress, normalize_host
from chatmedia.errors import InvalidSourceUrl

if TYPE_CHECKING:
    import httpx  # imported where it is used, as in chatmedia.egress.fetcher

MAX_URL_LENGTH = 8192
_DEFAULT_PORTS = {"http": 80, "https": 443}


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
    if not isinstance(text, str) or not text or len(text) > MAX_URL_LENGTH:
        raise InvalidSourceUrl("the source URL must be an absolute http(s) URL")
    if any(c == "\\" or c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidSourceUrl("the source URL has a backslash, a space or a control character")
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
