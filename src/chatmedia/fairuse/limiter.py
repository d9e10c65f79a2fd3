"""The request limits: per key, per client address on the routes open without a key, and
the lockout of an address after failed authentications; and the headers that tell a
client where it stands (draft-ietf-httpapi-ratelimit-headers):

    RateLimit-Policy: "key";q=2000;w=2     the policy: 2000 requests in 2 seconds
    RateLimit: "key";r=1999;t=1            what is left of it, and when the window moves

A request is admitted by exactly one policy: "key" (its key's own rate, else
CHATMEDIA_RATE_LIMIT), "address" (no key, on an open route: CHATMEDIA_ANON_RATE_LIMIT)
or none (a valid signed link: never limited by address). Refused, it gets 429
`rate_limited` with those headers and `Retry-After`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from math import ceil

from limits import RateLimitItemPerMinute
from limits.strategies import SlidingWindowCounterRateLimiter
from starlette.types import Scope

from chatmedia.egress.policy import IPNetwork
from chatmedia.errors import RateLimited
from chatmedia.fairuse.clients import client_address
from chatmedia.fairuse.counters import NodeCounters
from chatmedia.fairuse.rates import Rate, parse_rate

# Where an admitted request's headers wait for its answer (chatmedia.http.security).
SCOPE_KEY = "chatmedia.ratelimit"
# How long an address that failed too often is refused.
LOCKOUT_SECONDS = 60
# A worker takes up to burst/32 (at most 32) requests' worth of a limit at once from the
# shared counters and spends them itself: one locked update serves many requests. What
# it took is counted at once, so together the workers never pass a limit; what a worker
# has not spent within a second lapses (it may so refuse a little early, never late).
# Limits with a burst under 64 are counted one request at a time, exactly.
PERMITS_DIVISOR = 32
MAX_PERMITS = 32
PERMITS_LIFETIME = 1.0
MAX_HELD = 10_000
KEY_POLICY, ADDRESS_POLICY, FAILURE_POLICY = "key", "address", "auth-failures"


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """The limits of a node (None: off)."""

    key_rate: Rate | None = None
    anonymous_rate: Rate | None = None
    auth_failures: int | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()


class Limiter:
    """Counts requests in `counters` (shared by the node's workers) and refuses those over
    a limit with RateLimited."""

    def __init__(self, settings: LimitSettings, counters: NodeCounters) -> None:
        self.settings = settings
        self._counters = counters
        self._windows = SlidingWindowCounterRateLimiter(counters)
        self._failures = (
            RateLimitItemPerMinute(settings.auth_failures) if settings.auth_failures else None
        )
        # This worker's unspent permits, by policy and who: (how many, until, RateLimit).
        self._permits: dict[tuple[str, str], tuple[int, float, bytes]] = {}

    def admit_key(self, scope: Scope, key_id: str, own_rate: str | None) -> None:
        """Count a request made with a valid key, against its own rate or the default."""
        rate = _own_rate(own_rate) if own_rate else self.settings.key_rate
        if rate is not None:
            self._admit(scope, rate, KEY_POLICY, key_id)

    def admit_anonymous(self, scope: Scope) -> None:
        """Count a request without any credential on a route open to such requests,
        against its client address (refused outright while the address is locked out)."""
        self.refuse_if_locked_out(scope)
        rate = self.settings.anonymous_rate
        if rate is not None:
            self._admit(scope, rate, ADDRESS_POLICY, self._address(scope))

    def refuse_if_locked_out(self, scope: Scope) -> None:
        """Raise RateLimited while the request's address is locked out (for a request that
        carries no valid credential)."""
        if self._failures is None:
            return
        if not self._counters.plain_started_since(time.time() - LOCKOUT_SECONDS):
            return  # no lockout began within its length: none holds
        locked, lapses_at = self._counters.plain(_lock_name(self._address(scope)))
        if locked:
            wait = max(1, ceil(lapses_at - time.time()))
            policy = f'"{FAILURE_POLICY}";q={self._failures.amount};w={LOCKOUT_SECONDS}'
            raise RateLimited(
                "too many failed authentications from this address; try again later",
                wait,
                policy,
                f'"{FAILURE_POLICY}";r=0;t={wait}',
            )

    def failed(self, scope: Scope) -> None:
        """Count a failed authentication against the request's address; past the limit,
        lock the address out and raise RateLimited."""
        if self._failures is None:
            return
        address = self._address(scope)
        if not self._windows.hit(self._failures, FAILURE_POLICY, address):
            # Starts the lockout, or counts within a running one (never prolonging it).
            self._counters.incr(_lock_name(address), LOCKOUT_SECONDS)
        self.refuse_if_locked_out(scope)

    def _address(self, scope: Scope) -> str:
        return client_address(scope, self.settings.trusted_proxies)

    def _admit(self, scope: Scope, rate: Rate, policy: str, who: str) -> None:
        now = time.monotonic()
        held = self._permits.get((policy, who))
        if held is not None and held[0] > 0 and now < held[1]:
            left, until, state = held
            self._permits[policy, who] = (left - 1, until, state)
        else:
            taken = self._take(rate, policy, who)
            count, moves_in = self._counters.last_acquired()
            remaining = max(0, rate.burst - int(count))
            state = f'"{policy}";r={remaining};t={ceil(moves_in)}'.encode()
            if len(self._permits) >= MAX_HELD:  # many clients at once: start afresh
                self._permits.clear()
            self._permits[policy, who] = (taken - 1, now + PERMITS_LIFETIME, state)
        scope[SCOPE_KEY] = (
            (b"ratelimit-policy", _policy_header(policy, rate)),
            (b"ratelimit", state),
        )

    def _take(self, rate: Rate, policy: str, who: str) -> int:
        """Count a batch of requests (or one) against the shared window; how many."""
        batch = min(MAX_PERMITS, rate.burst // PERMITS_DIVISOR)
        if batch > 1 and self._windows.hit(rate.item, policy, who, cost=batch):
            return batch
        if self._windows.hit(rate.item, policy, who):
            return 1
        stats = self._windows.get_window_stats(rate.item, policy, who)
        wait = max(1, ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"over the {policy} limit of {rate} (a burst of {rate.burst}); slow down",
            wait,
            _policy_header(policy, rate).decode(),
            f'"{policy}";r=0;t={wait}',
        )


# A key's own rate, as its row holds it ("50/s"): few keys have one, and fewer differ.
_own_rate = lru_cache(maxsize=256)(parse_rate)


@lru_cache(maxsize=256)
def _policy_header(policy: str, rate: Rate) -> bytes:
    return f'"{policy}";q={rate.burst};w={rate.window}'.encode()


def _lock_name(address: str) -> str:
    return f"lockout/{address}"
