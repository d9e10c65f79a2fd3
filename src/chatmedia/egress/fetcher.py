"""The fetcher: HTTP GETs (and OAuth token requests) to destinations the policy allows.

For every hop (the first request and each redirect) the host is resolved once, every
address it resolves to is checked, and the connection goes to the checked address, with
the original Host header and TLS server name, so DNS rebinding between check and connect
gets nowhere. Redirects are followed by hand, at most `max_redirects`, each checked like
the first; credentials go only to the origin they were given for. Environment proxy
variables are ignored; with a configured proxy the proxy connects, so it must enforce the
same policy.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import anyio

from chatmedia.egress.policy import FetchPolicy, IPAddress
from chatmedia.egress.urls import SourceUrl
from chatmedia.errors import DestinationNotAllowed, SourceError, SourceTimeout
from chatmedia.storage import CHUNK_SIZE

if TYPE_CHECKING:
    # Imported where it is used: a worker that never imports a URL need not carry httpx
    # (about 6 MiB).
    import httpx

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
USER_AGENT = "chatmedia"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# How much of a POST's answer is read (token endpoints answer a little JSON).
MAX_ANSWER = 64 * 1024


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The addresses the system resolver gives for `host`, as a connection would get them."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise SourceError(f"the source host {host} does not resolve") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


@dataclass(frozen=True, slots=True)
class SourceResponse:
    """A source's answer, its body not yet read."""

    url: SourceUrl
    status: int
    headers: httpx.Headers
    _response: httpx.Response

    @property
    def content_length(self) -> int | None:
        """The announced length of the decoded body, when the body is not compressed."""
        length = self.headers.get("content-length")
        if self.headers.get("content-encoding", "identity").lower() != "identity":
            return None
        return int(length) if length and length.isdigit() else None

    async def body(self) -> AsyncIterator[bytes]:
        """The body, decoded (gzip and deflate, in bounded pieces however much it expands);
        raises SourceError if it breaks off or is shorter than announced, SourceTimeout
        if it stalls."""
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        import httpx

        if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
            raise SourceError(f"the source sent an unsupported content encoding: {encoding}")
        decoder = zlib.decompressobj(32 + zlib.MAX_WBITS) if encoding != "identity" else None
        try:
            async for raw in self._response.aiter_raw(CHUNK_SIZE):
                if decoder is None:
                    yield raw
                    continue
                data = raw
                while data:
                    piece = decoder.decompress(data, CHUNK_SIZE)
                    data = decoder.unconsumed_tail
                    if piece:
                        yield piece
            if decoder is not None and not decoder.eof:
                raise SourceError("the source's compressed body ends early")
        except zlib.error:
            raise SourceError("the source's compressed body is corrupt") from None
        except httpx.TimeoutException:
            raise SourceTimeout("the source stopped sending") from None
        except httpx.HTTPError:
            raise SourceError("the source broke off before the end of the body") from None


class Fetcher:
    """Fetches under a `FetchPolicy`. One per process; it shares the TLS setup."""

    def __init__(self, policy: FetchPolicy, resolver: Resolver = system_resolver) -> None:
        self.policy = policy
        self._resolver = resolver

    @cached_property
    def _tls(self) -> ssl.SSLContext:
        # Made on first use: loading the CA bundle costs memory a worker may never need.
        return ssl.create_default_context()

    @asynccontextmanager
    async def get(
        self,
        source: SourceUrl,
        secret_headers: Mapping[str, str],
    ) -> AsyncIterator[SourceResponse]:
        """Open `source`, following redirects; `secret_headers` go to its origin only.
        Raises DestinationNotAllowed (before any connection), SourceError, SourceTimeout."""
        async with self._client() as client:
            url = source
            for _ in range(self.policy.max_redirects + 1):
                headers = dict(secret_headers) if url.origin == source.origin else {}
                response = await self._send(client, "GET", url, headers)
                location = response.headers.get("location")
                if response.status_code not in _REDIRECTS or not location:
                    break
                await response.aclose()
                url = url.join(location)
            else:
                raise SourceError(
                    f"the source redirected more than {self.policy.max_redirects} times"
                )
            try:
                if response.status_code >= 400:
                    raise SourceError(f"the source answered {response.status_code}")
                yield SourceResponse(url, response.status_code, response.headers, response)
            finally:
                await response.aclose()

    async def post(
        self,
        target: SourceUrl,
        headers: Mapping[str, str],
        *,
        form: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> tuple[int, bytes]:
        """POST a form or raw content, following no redirect; the status and at most
        MAX_ANSWER bytes of the answer. Raises like `get`."""
        import httpx

        async with self._client() as client:
            response = await self._send(client, "POST", target, headers, form, content)
            answer = bytearray()
            try:
                async for chunk in response.aiter_bytes():
                    answer += chunk[: MAX_ANSWER - len(answer)]
                    if len(answer) >= MAX_ANSWER:
                        break
            except httpx.TimeoutException:
                raise SourceTimeout(f"{target.host} did not answer in time") from None
            except httpx.HTTPError:
                raise SourceError(f"{target.host} broke off its answer") from None
            finally:
                await response.aclose()
            return response.status_code, bytes(answer)

    def _client(self) -> httpx.AsyncClient:
        import httpx

        policy = self.policy
        timeout = httpx.Timeout(
            connect=policy.connect_timeout, read=policy.read_timeout, write=policy.read_timeout,
            pool=policy.connect_timeout,
        )  # fmt: skip
        # No pooling: a connection opened for one host name must not serve another.
        return httpx.AsyncClient(
            verify=self._tls,
            trust_env=False,
            proxy=policy.proxy,
            timeout=timeout,
            limits=httpx.Limits(max_keepalive_connections=0),
            follow_redirects=False,
        )

    async def _send(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: SourceUrl,
        headers: Mapping[str, str],
        form: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        import httpx

        target, extensions = await self.destination(url)
        request = client.build_request(
            method,
            target,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
            | {"Host": url.host_header},
            data=form,
            content=content,
            extensions=extensions,
        )
        try:
            return await client.send(request, stream=True)
        except httpx.TimeoutException:
            raise SourceTimeout(f"the source {url.host} did not answer in time") from None
        except httpx.HTTPError:
            raise SourceError(f"could not connect to the source {url.host}") from None

    async def destination(self, url: SourceUrl) -> tuple[httpx.URL, dict[str, object]]:
        """Check the destination (port, then every address the host resolves to) and name
        the URL to connect to, pinned to a checked address; raises DestinationNotAllowed.
        Makes no connection."""
        policy = self.policy
        if not policy.port_allowed(url.port):
            raise DestinationNotAllowed(f"port {url.port} is not allowed")
        literal = url.ip_literal
        if literal is None and policy.proxy is not None:
            # The proxy resolves and connects by name (and must apply the same policy): a
            # node behind one often cannot resolve outside names at all.
            return url.url, {}
        addresses = [literal] if literal is not None else await self._resolver(url.host, url.port)
        if not addresses:
            raise SourceError(f"the source host {url.host} does not resolve")
        if not policy.host_exempt(url.host) and not all(map(policy.address_allowed, addresses)):
            raise DestinationNotAllowed(f"fetching from {url.host} is not allowed")
        if policy.proxy is not None:
            return url.url, {}
        pinned = url.url.copy_with(host=str(addresses[0]))
        extensions: dict[str, object] = {}
        if url.url.scheme == "https" and literal is None:
            extensions["sni_hostname"] = url.host
        return pinned, extensions
