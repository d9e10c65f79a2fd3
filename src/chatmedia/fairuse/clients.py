"""Who a request comes from, for the limits counted per client address.

The peer's address, unless the peer is one of CHATMEDIA_TRUSTED_PROXIES: then the nearest
address in `X-Forwarded-For` that is not a trusted proxy, read from the right (each proxy
appends the address it received the request from; anything to the left of the first
address no trusted proxy wrote is the client's own say, and can be forged). IPv6 clients
are counted by their /64 network, which one subscriber usually holds whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address

from starlette.types import Scope

from chatmedia.egress.policy import IPNetwork

# Where the address is kept in the request's scope once worked out.
SCOPE_KEY = "chatmedia.client"
UNKNOWN = "unknown"


def client_address(scope: Scope, trusted: tuple[IPNetwork, ...]) -> str:
    """The address (an IPv6 client's /64) the request's limits are counted under."""
    known: str | None = scope.get(SCOPE_KEY)
    if known is None:
        peer = scope.get("client")
        host = peer[0] if peer else None
        if trusted:
            known = nearest_untrusted(host, _forwarded_for(scope["headers"]), trusted)
        else:  # the peer alone: worked out once per address
            known = _peer_partition(host)
        scope[SCOPE_KEY] = known
    return known


@lru_cache(maxsize=4096)
def _peer_partition(host: str | None) -> str:
    return nearest_untrusted(host, (), ())


def nearest_untrusted(
    peer: str | None, forwarded: Iterable[str], trusted: tuple[IPNetwork, ...]
) -> str:
    """The client behind `peer`: `peer` itself unless it is trusted, else the rightmost
    address of `forwarded` (X-Forwarded-For's, in order) that is not trusted (the leftmost,
    when all are). An entry that is not an address stops the walk: what lies left of it
    cannot be told apart from a forgery."""
    client = _address(peer)
    if client is None:
        return UNKNOWN
    for entry in reversed(list(forwarded)):
        if not _trusted(client, trusted):
            break
        hop = _address(entry)
        if hop is None:
            break
        client = hop
    return _partition(client)


def _forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Every X-Forwarded-For entry, in order, over however many header lines."""
    entries: list[str] = []
    for name, value in headers:
        if name == b"x-forwarded-for":
            entries.extend(part.strip() for part in value.decode("latin-1").split(","))
    return entries


def _address(text: str | None) -> IPv4Address | IPv6Address | None:
    if not text:
        return None
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPv4Address | IPv6Address, trusted: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def _partition(address: IPv4Address | IPv6Address) -> str:
    if isinstance(address, IPv6Address):
        return str(IPv6Network((address, 64), strict=False))
    return str(address)
