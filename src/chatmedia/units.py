"""Parsing of human-written sizes ("5MiB", "20MB") and durations ("30d", "12h")."""

from __future__ import annotations

import re
from datetime import timedelta

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"(\d{1,20}(?:\.\d{1,9})?)\s*([a-z]{0,3})", re.IGNORECASE)

_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d{1,12})\s*([smhdw]?)", re.IGNORECASE)

MAX_SIZE = 2**63 - 1


def parse_size(text: str) -> int:
    """Return the number of bytes in `text`: plain bytes, or a number with a decimal
    (kB, MB, GB, TB: powers of 1000) or binary (KiB, MiB, GiB, TiB: powers of 1024) unit.

    Raises ValueError for anything else, including sizes past 2**63-1.
    """
    match = _SIZE.fullmatch(text.strip())
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError("not a size")
    whole, _, fraction = match.group(1).partition(".")
    scale = _SIZE_UNITS[unit]
    size = int(whole) * scale
    if fraction:
        size += int(fraction) * scale // 10 ** len(fraction)
    if size > MAX_SIZE:
        raise ValueError("size too large")
    return size


def parse_duration(text: str) -> timedelta:
    """Return the duration in `text`: plain seconds or a whole number with one of the units
    s, m, h, d, w (e.g. "30d"). Raises ValueError for anything else."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError("not a duration")
    seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    if seconds > 100 * 365 * 86400:
        raise ValueError("duration too long")
    return timedelta(seconds=seconds)


def format_size(size: int) -> str:
    """Render a byte count for people, in binary units ("5 MiB", "1.5 GiB", "512 B")."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if value.is_integer() else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_bool(text: str) -> bool:
    """true/false, 1/0 or yes/no, in any case."""
    value = _BOOLEANS.get(text.strip().lower())
    if value is None:
        raise ValueError("not true or false")
    return value
