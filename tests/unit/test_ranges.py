import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmedia.errors import PreconditionFailed, RangeNotSatisfiable
from chatmedia.http.ranges import ByteRange, Validators, entity_tags, parse_range

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 10)),
        ("bytes=10-", (10, SIZE)),
        ("bytes=-100", (900, SIZE)),
        ("bytes=-5000", (0, SIZE)),
        ("bytes=990-5000", (990, SIZE)),
        ("BYTES=1-1", (1, 2)),
        ("bytes=0-99999999999999999999999", (0, SIZE)),
        ("bytes=999-999", (999, SIZE)),
    ],
)
def test_satisfiable_ranges(header: str, expected: tuple[int, int]) -> None:
    assert parse_range(header, SIZE) == ByteRange(*expected, SIZE)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=5-2",  # invalid: ignored (RFC 9110 §14.1.1)
        "bytes=-",
        "items=0-5",
        "bytes=0-1,5-9",  # several ranges: the whole content
        "bytes=a-b",
        "bytes 0-5",
        "bytes=0-5" + ",0-1" * 300,
        "bytes=" + "9" * 5000 + "-",
    ],
)
def test_ignored_ranges(header: str | None) -> None:
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize(
    "header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0", "bytes=99999999999999999999999-"]
)
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, SIZE)
    assert info.value.headers == {"Content-Range": f"bytes */{SIZE}"}


def test_empty_content_has_no_satisfiable_range() -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=0-", 0)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-1", 0)


@given(st.text(max_size=300), st.integers(min_value=0, max_value=2**40))
def test_any_header_gives_a_valid_answer(header: str, size: int) -> None:
    try:
        result = parse_range(header, size)
    except RangeNotSatisfiable as e:
        unsatisfiable_size = e.size
        assert unsatisfiable_size == size
        return
    if result is not None:
        assert 0 <= result.start < result.end <= size


@given(st.integers(min_value=1, max_value=2**40), st.data())
def test_well_formed_ranges_select_exactly_those_bytes(size: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(min_value=0, max_value=size - 1))
    last = data.draw(st.integers(min_value=first, max_value=size * 2))
    result = parse_range(f"bytes={first}-{last}", size)
    assert result == ByteRange(first, min(last + 1, size), size)
    assert result.content_range == f"bytes {first}-{min(last, size - 1)}/{size}"


def test_hostile_headers_are_handled_in_linear_time() -> None:
    headers = [
        "bytes=" + ",".join(f"{i}-{i}" for i in range(100_000)),
        "bytes=" + "0" * 1_000_000 + "-",
        "bytes=" + " " * 1_000_000,
        '"' * 1_000_000,
    ]
    started = time.perf_counter()
    for header in headers:
        assert parse_range(header, SIZE) is None
        assert entity_tags(header) == []
    assert time.perf_counter() - started < 1.0


MODIFIED = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
VALIDATORS = Validators(etag='"abc"', last_modified=MODIFIED)
HTTP_DATE = format_datetime(MODIFIED, usegmt=True)
LATER = format_datetime(MODIFIED + timedelta(hours=1), usegmt=True)
EARLIER = format_datetime(MODIFIED - timedelta(hours=1), usegmt=True)


def test_if_none_match() -> None:
    assert VALIDATORS.not_modified('"abc"', None)
    assert VALIDATORS.not_modified('W/"abc"', None)  # weak comparison (§13.1.2)
    assert VALIDATORS.not_modified('"x", "abc"', None)
    assert VALIDATORS.not_modified("*", None)
    assert not VALIDATORS.not_modified('"x"', HTTP_DATE)  # If-None-Match wins
    assert not VALIDATORS.not_modified("garbage", None)


def test_if_modified_since() -> None:
    assert VALIDATORS.not_modified(None, HTTP_DATE)
    assert VALIDATORS.not_modified(None, LATER)
    assert not VALIDATORS.not_modified(None, EARLIER)
    assert not VALIDATORS.not_modified(None, "not a date")


def test_preconditions() -> None:
    VALIDATORS.check_preconditions('"abc"', None)
    VALIDATORS.check_preconditions("*", None)
    VALIDATORS.check_preconditions(None, HTTP_DATE)
    with pytest.raises(PreconditionFailed):
        VALIDATORS.check_preconditions('W/"abc"', None)  # strong comparison (§13.1.1)
    with pytest.raises(PreconditionFailed):
        VALIDATORS.check_preconditions(None, EARLIER)


def test_if_range() -> None:
    assert VALIDATORS.range_applies(None)
    assert VALIDATORS.range_applies('"abc"')
    assert not VALIDATORS.range_applies('W/"abc"')
    assert not VALIDATORS.range_applies('"other"')
    assert VALIDATORS.range_applies(HTTP_DATE)
    assert not VALIDATORS.range_applies(EARLIER)
    assert not VALIDATORS.range_applies("garbage")
