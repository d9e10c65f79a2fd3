from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmedia.units import MAX_SIZE, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("5MiB", 5 * 1024 * 1024),
        ("5 MiB", 5 * 1024 * 1024),
        ("20MB", 20_000_000),
        ("1GiB", 1024**3),
        ("5242880", 5_242_880),
        ("0", 0),
        ("1.5KiB", 1536),
        ("2kb", 2000),
        ("3b", 3),
        ("1tib", 1024**4),
    ],
)
def test_parse_size_accepts_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "5XB", "-1", "MiB", "5 M i B", "1e6", "9" * 25, "1.5.5MB"])
def test_parse_size_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@given(st.integers(min_value=0, max_value=MAX_SIZE))
def test_plain_byte_counts_round_trip(size: int) -> None:
    assert parse_size(str(size)) == size


@given(st.text(max_size=40))
def test_parse_size_never_fails_unexpectedly(text: str) -> None:
    try:
        size = parse_size(text)
    except ValueError:
        return
    assert 0 <= size <= MAX_SIZE


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("2w", 1209600), ("10", 10)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "d", "1y", "-5d", "1.5h", "99999999999999d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_size() -> None:
    assert format_size(5 * 1024 * 1024) == "5 MiB"
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
