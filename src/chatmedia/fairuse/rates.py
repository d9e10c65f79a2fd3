"""Request rates as they are written (`1000/s`), and as the `limits` package counts them.

A rate of N per unit allows a burst of 2N: it is counted as 2N requests in a sliding window
two units long (the `limits` package's sliding window counter), so a client that has been
quiet may send 2N at once, and one that keeps sending gets N per unit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from limits import (
    RateLimitItem,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    RateLimitItemPerSecond,
)

RATE_PATTERN = r"^([1-9][0-9]{0,8})/(s|sec|second|m|min|minute|h|hour)$"
_RATE = re.compile(RATE_PATTERN)
_UNITS = {
    "s": "s", "sec": "s", "second": "s",
    "m": "min", "min": "min", "minute": "min",
    "h": "h", "hour": "h",
}  # fmt: skip
_SECONDS = {"s": 1, "min": 60, "h": 3600}
_ITEMS: dict[str, type[RateLimitItem]] = {
    "s": RateLimitItemPerSecond,
    "min": RateLimitItemPerMinute,
    "h": RateLimitItemPerHour,
}
# The window is this many units long; the burst is this many times the rate.
BURST_UNITS = 2
OFF = "off"


@dataclass(frozen=True)  # not slots: `item` is cached on the instance
class Rate:
    """`count` requests per `unit` ("s", "min" or "h"), with a burst of twice as many."""

    count: int
    unit: str

    def __str__(self) -> str:
        return f"{self.count}/{self.unit}"

    @property
    def per_second(self) -> float:
        """The sustained rate, to compare rates of different units."""
        return self.count / _SECONDS[self.unit]

    @property
    def burst(self) -> int:
        """How many requests may come at once."""
        return self.count * BURST_UNITS

    @property
    def window(self) -> int:
        """Seconds the burst is counted over."""
        return _SECONDS[self.unit] * BURST_UNITS

    @cached_property
    def item(self) -> RateLimitItem:
        """The rate as the `limits` package counts it."""
        return _ITEMS[self.unit](self.burst, BURST_UNITS)


def parse_rate(text: str) -> Rate:
    """`N/s`, `N/min` or `N/h` (also `second`, `minute`, `hour`); raises ValueError."""
    match = _RATE.fullmatch(text.strip().lower().replace(" ", ""))
    if match is None:
        raise ValueError("a rate is written N/s, N/min or N/h with N at least 1")
    return Rate(int(match[1]), _UNITS[match[2]])


def parse_limit(text: str) -> Rate | None:
    """A rate, or None for `off`; raises ValueError."""
    return None if text.strip().lower() == OFF else parse_rate(text)
