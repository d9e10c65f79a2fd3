import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmedia.egress.policy import (
    FetchPolicy,
    embedded_ipv4,
    host_matches,
    is_refused,
    parse_hosts,
    parse_networks,
    parse_ports,
)

REFUSED_V4 = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
]  # fmt: skip
REFUSED_V6 = [
    "::1/128", "::/128", "fe80::/10", "fc00::/7", "fec0::/10", "2001:db8::/32", "ff00::/8",
    "2001::/32",
]  # fmt: skip


def address_in(network: str) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    net = ipaddress.ip_network(network)
    return st.integers(0, net.num_addresses - 1).map(lambda i: net[i])


def embeddings(v4: ipaddress.IPv4Address) -> list[ipaddress.IPv6Address]:
    n = int(v4)
    return [
        ipaddress.IPv6Address(0xFFFF_0000_0000 | n),  # IPv4-mapped ::ffff:a.b.c.d
        ipaddress.IPv6Address(n),  # IPv4-compatible ::a.b.c.d
        ipaddress.IPv6Address((0x64FF9B << 96) | n),  # NAT64 64:ff9b::a.b.c.d
        ipaddress.IPv6Address((0x2002 << 112) | (n << 80)),  # 6to4 2002:aabb:ccdd::
    ]


@given(st.sampled_from(REFUSED_V4).flatmap(address_in))
def test_refused_ipv4_and_every_ipv6_form_of_it(address: ipaddress.IPv4Address) -> None:
    assert is_refused(address)
    for form in embeddings(address):
        assert embedded_ipv4(form) == address
        assert is_refused(form), form


@given(st.sampled_from(REFUSED_V6).flatmap(address_in))
def test_refused_ipv6(address: ipaddress.IPv6Address) -> None:
    assert is_refused(address)


@pytest.mark.parametrize(
    "text", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8",
             "64:ff9b::808:808", "2002:808:808::1"]
)  # fmt: skip
def test_public_addresses_are_allowed(text: str) -> None:
    assert not is_refused(ipaddress.ip_address(text))
    assert FetchPolicy().address_allowed(ipaddress.ip_address(text))


def test_broadcast_and_metadata() -> None:
    assert is_refused(ipaddress.ip_address("255.255.255.255"))
    assert is_refused(ipaddress.ip_address("169.254.169.254"))
    assert is_refused(ipaddress.ip_address("fd00:ec2::254"))  # AWS IPv6 metadata


def test_teredo_is_refused_whatever_it_embeds() -> None:
    assert is_refused(ipaddress.ip_address("2001:0:4136:e378:8000:63bf:3fff:fdd2"))


def test_allow_networks_open_exceptions() -> None:
    policy = FetchPolicy(allow_networks=parse_networks("127.0.0.1/32, fd00::/8"))
    assert policy.address_allowed(ipaddress.ip_address("127.0.0.1"))
    assert policy.address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert policy.address_allowed(ipaddress.ip_address("fd12::1"))
    assert not policy.address_allowed(ipaddress.ip_address("127.0.0.2"))
    assert not policy.address_allowed(ipaddress.ip_address("10.0.0.1"))


def test_hosts_and_ports() -> None:
    hosts = parse_hosts("Media.Example.com., *.cdn.example.net")
    assert hosts == ("media.example.com", "*.cdn.example.net")
    assert host_matches("MEDIA.example.com.", hosts)
    assert host_matches("a.b.cdn.example.net", hosts)
    assert not host_matches("cdn.example.net", hosts)
    assert not host_matches("evilcdn.example.net", hosts)
    policy = FetchPolicy(ports=parse_ports("443, 8000-8100"))
    assert policy.port_allowed(443)
    assert policy.port_allowed(8050)
    assert not policy.port_allowed(80)
    assert FetchPolicy().port_allowed(8443)
    assert not FetchPolicy().port_allowed(22)


@pytest.mark.parametrize(
    ("parse", "text"),
    [(parse_networks, "10.0.0.0/33"), (parse_networks, "nope"), (parse_ports, "0"),
     (parse_ports, "70000"), (parse_ports, "9-8"), (parse_ports, "http")],
)  # fmt: skip
def test_parse_errors_name_the_item(parse: object, text: str) -> None:
    with pytest.raises(ValueError, match=text.split("/")[0]):
        parse(text)  # type: ignore[operator]
