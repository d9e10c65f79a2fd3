"""The pieces of the request limits: rates as written, the node's shared counters (which
must decide exactly as the `limits` package's own memory storage, across processes too),
and the client address behind trusted proxies."""

from __future__ import annotations

import multiprocessing
import time
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from chatmedia.fairuse.clients import nearest_untrusted
from chatmedia.fairuse.counters import NodeCounters, create_counters_file
from chatmedia.fairuse.rates import Rate, parse_limit, parse_rate


@pytest.mark.parametrize(
    ("text", "rate"),
    [("1000/s", Rate(1000, "s")), (" 50 / second ", Rate(50, "s")), ("300/MIN", Rate(300, "min")),
     ("2/h", Rate(2, "h")), ("7/hour", Rate(7, "h"))],
)  # fmt: skip
def test_rates_as_written(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate
    assert parse_rate(str(rate)) == rate
    assert rate.burst == 2 * rate.count
    assert rate.item.amount == rate.burst
    assert rate.item.get_expiry() == rate.window


@pytest.mark.parametrize("text", ["0/s", "1000", "10/d", "-5/s", "1.5/s", "/s", "10/ss", ""])
def test_rates_that_are_not(text: str) -> None:
    with pytest.raises(ValueError, match="a rate is written"):
        parse_rate(text)


def test_off_is_no_limit() -> None:
    assert parse_limit("off") is None
    assert parse_limit("OFF ") is None


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1_800_000_000.0
        monkeypatch.setattr(time, "time", lambda: self.now)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.integers(1, 3),
            st.floats(0, 1.5, allow_nan=False),
        ),
        max_size=80,
    ),
    limit=st.integers(1, 8),
)
def test_node_counters_decide_as_the_memory_storage(
    steps: list[tuple[str, int, float]], limit: int
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        clock = Clock(monkeypatch)
        ours = SlidingWindowCounterRateLimiter(NodeCounters())
        reference = SlidingWindowCounterRateLimiter(MemoryStorage())
        rate = Rate(limit, "s")
        for key, cost, pause in steps:
            clock.now += pause
            assert ours.hit(rate.item, key, cost=cost) == reference.hit(rate.item, key, cost=cost)
            assert ours.get_window_stats(rate.item, key).remaining == (
                reference.get_window_stats(rate.item, key).remaining
            )


def _hit_many(path: str, hits: int, results: multiprocessing.Queue[int]) -> None:
    limiter = SlidingWindowCounterRateLimiter(NodeCounters(path))
    item = Rate(300, "h").item  # one window for the whole test
    results.put(sum(limiter.hit(item, "shared") for _ in range(hits)))


def test_processes_sharing_the_file_count_together(tmp_path: Path) -> None:
    path = create_counters_file(str(tmp_path))
    results: multiprocessing.Queue[int] = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_hit_many, args=(path, 400, results)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    # 1,200 asked in all; each alone would have allowed 600 (the burst of 300/h).
    assert sum(results.get(timeout=5) for _ in workers) == 600


def test_a_full_table_never_refuses_a_new_key(monkeypatch: pytest.MonkeyPatch) -> None:
    Clock(monkeypatch)
    limiter = SlidingWindowCounterRateLimiter(NodeCounters())
    item = Rate(1, "h").item
    assert all(limiter.hit(item, f"client-{n}") for n in range(70_000))


def test_a_plain_counter_lapses(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    counters = NodeCounters()
    assert counters.incr("lock", 60) == 1
    assert counters.incr("lock", 60) == 2
    assert counters.get_expiry("lock") == pytest.approx(clock.now + 60, abs=0.01)
    clock.now += 61
    assert counters.get("lock") == 0
    assert counters.incr("lock", 60) == 1


_V4 = st.ip_addresses(v=4).map(str)
_PROXIES = (ip_network("10.0.0.0/8"), ip_network("fd00::/8"))
_PROXY = st.one_of(
    st.integers(0, 2**24 - 1).map(lambda n: str(ip_address(0x0A000000 + n))),
    st.integers(0, 2**120 - 1).map(lambda n: str(ip_address((0xFD << 120) + n))),
)
_PUBLIC = st.ip_addresses(v=4).filter(lambda a: a not in _PROXIES[0]).map(str)


@given(peer=_PUBLIC, forwarded=st.lists(st.text(max_size=20) | _V4, max_size=5))
def test_an_untrusted_peer_is_the_client_whatever_it_forwards(
    peer: str, forwarded: list[str]
) -> None:
    assert nearest_untrusted(peer, forwarded, _PROXIES) == peer
    assert nearest_untrusted(peer, forwarded, ()) == peer


@given(
    forged=st.lists(st.text(max_size=20) | _V4, max_size=4),
    client=_PUBLIC,
    hops=st.lists(_PROXY, max_size=3),
    peer=_PROXY,
)
def test_behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client(
    forged: list[str], client: str, hops: list[str], peer: str
) -> None:
    # What the client wrote itself (forged), then what each proxy appended.
    assert nearest_untrusted(peer, [*forged, client, *hops], _PROXIES) == client


@given(peer=_PROXY, hops=st.lists(_PROXY, max_size=3))
def test_only_proxies_all_the_way_counts_the_first_of_them(peer: str, hops: list[str]) -> None:
    expected = hops[0] if hops else peer
    found = nearest_untrusted(peer, hops, _PROXIES)
    if ":" in expected:
        assert ip_address(expected) in ip_network(found)
    else:
        assert found == expected


def test_ipv6_clients_count_by_their_64() -> None:
    assert nearest_untrusted("2001:db8:1:2:3:4:5:6", [], ()) == "2001:db8:1:2::/64"
    assert nearest_untrusted("::ffff:203.0.113.5", [], ()) == "203.0.113.5"
    assert nearest_untrusted(None, [], ()) == "unknown"
