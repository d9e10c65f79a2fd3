"""Which destinations the server may fetch from.

By default only globally routable unicast addresses on ports 80, 443, 8080 and 8443. An
IPv6 address that embeds an IPv4 one (IPv4-mapped, IPv4-compatible, NAT64, 6to4) is
judged by the IPv4 address it leads to; Teredo is refused outright. Operators open
exceptions by network (CIDR) or by host name.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS = ((80, 80), (443, 443), (8080, 8080), (8443, 8443))

# Refused whatever the ipaddress module thinks of them (it is the backstop below).
_REFUSED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, where cloud metadata services live
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/32",  # Teredo
        "2001:db8::/32",  # documentation
        "2001:10::/28",  # ORCHID
        "2001:20::/28",  # ORCHIDv2
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to, for the forms that embed one."""
    if address.version == 4:
        return None
    assert isinstance(address, ipaddress.IPv6Address)
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_refused(address: IPAddress) -> bool:
    """True for every address that is not a globally routable unicast address."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return is_refused(inner)
    if any(address in network for network in _REFUSED):
        return True
    return not address.is_global or address.is_multicast


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs ("127.0.0.1/32, fd00::/8"); raises ValueError naming one."""
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"'{item}' is not a network in CIDR notation") from None
    return tuple(networks)


def parse_hosts(text: str) -> tuple[str, ...]:
    """Comma-separated host names; "*.example.com" matches every subdomain."""
    return tuple(normalize_host(h) for h in text.split(",") if h.strip())


def parse_ports(text: str) -> tuple[tuple[int, int], ...]:
    """Comma-separated ports and ranges ("80,443,8000-9000")."""
    ranges = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        low, _, high = item.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ValueError(f"'{item}' is not a port or a range of ports") from None
        if not 0 < first <= last < 65536:
            raise ValueError(f"'{item}' is not a port or a range of ports")
        ranges.append((first, last))
    return tuple(ranges)


def normalize_host(host: str) -> str:
    """Lower case, without a trailing dot: how hosts are compared."""
    return host.strip().lower().rstrip(".")


def host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    """True when `host` is one of `patterns` or a subdomain of a "*." pattern."""
    host = normalize_host(host)
    return any(
        host == p or (p.startswith("*.") and host.endswith(p[1:]) and host != p[2:])
        for p in patterns
    )


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Where fetches may go, and how long they may take (seconds)."""

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    ports: tuple[tuple[int, int], ...] = DEFAULT_PORTS
    proxy: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    deadline: float = 60.0
    max_redirects: int = 3

    def address_allowed(self, address: IPAddress) -> bool:
        """An address may be reached: allowed explicitly, or not refused."""
        candidates = [address, embedded_ipv4(address)]
        if any(a in n for a in candidates if a is not None for n in self.allow_networks):
            return True
        return not is_refused(address)

    def host_exempt(self, host: str) -> bool:
        """A host named in the allow-list is reached whatever its addresses."""
        return host_matches(host, self.allow_hosts)

    def port_allowed(self, port: int) -> bool:
        """The port is one of the allowed ones."""
        return any(low <= port <= high for low, high in self.ports)
