import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatmedia.egress.urls import MAX_URL_LENGTH, URL_PATTERN, parse_source_url
from chatmedia.errors import InvalidSourceUrl


@pytest.mark.parametrize(
    ("url", "host", "port", "host_header"),
    [
        ("https://example.com/a.jpg", "example.com", 443, "example.com"),
        ("http://EXAMPLE.com:8080/x", "example.com", 8080, "example.com:8080"),
        ("http://example.com./x", "example.com", 80, "example.com"),
        ("http://xn--bcher-kva.de/x", "xn--bcher-kva.de", 80, "xn--bcher-kva.de"),
        ("https://[2606:4700::1111]:8443/", "2606:4700::1111", 8443, "[2606:4700::1111]:8443"),
        ("http://2130706433/", "2130706433", 80, "2130706433"),
    ],
)
def test_parsed(url: str, host: str, port: int, host_header: str) -> None:
    source = parse_source_url(url)
    assert (source.host, source.port, source.host_header) == (host, port, host_header)


@pytest.mark.parametrize(
    "url",
    [
        "http://a@127.0.0.1/",
        "http://user:pass@example.com/",
        "http://example.com\\@127.0.0.1/",
        "http://exa mple.com/",
        "http://example.com/\r\nX: y",
        "ftp://example.com/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "//example.com/x",
        "/relative",
        "http:///x",
        "http://0177.0.0.1/",
        "http://example.com:0/",
        "http://example.com:99999/",
        "",
        "   ",
        "http://bücher.de/x",  # a URI is ASCII: the host goes in its xn-- form
        "http://example.com/a b",
        "http://example.com/%zz",
        "http://example.com/x\n",
    ],
)
def test_refused_as_invalid(url: str) -> None:
    with pytest.raises(InvalidSourceUrl):
        parse_source_url(url)


@given(st.text(max_size=200))
def test_any_text_parses_or_is_invalid(text: str) -> None:
    try:
        source = parse_source_url(text)
    except InvalidSourceUrl:
        return
    assert source.url.scheme in ("http", "https")
    assert not source.url.userinfo
    assert source.host == source.host.lower()
    assert "\\" not in text
    assert 0 < source.port < 65536


@given(st.sampled_from(["http://", "https://"]), st.text(max_size=40), st.text(max_size=40))
def test_url_shaped_text_parses_or_is_invalid(scheme: str, host: str, rest: str) -> None:
    with contextlib.suppress(InvalidSourceUrl):  # and nothing else
        parse_source_url(f"{scheme}{host}/{rest}")


def test_redirects_are_read_by_the_same_rules() -> None:
    source = parse_source_url("https://example.com/a/b")
    assert str(source.join("/c").url) == "https://example.com/c"
    assert source.join("http://other.example/x").host == "other.example"
    with pytest.raises(InvalidSourceUrl):
        source.join("http://a@127.0.0.1/")


@settings(max_examples=500, deadline=None)
@given(st.from_regex(URL_PATTERN, fullmatch=True).filter(lambda u: len(u) <= MAX_URL_LENGTH))
def test_every_url_the_document_allows_parses(text: str) -> None:
    # The OpenAPI document gives URL fields this pattern: what matches must be taken.
    source = parse_source_url(text)
    assert source.url.scheme in ("http", "https")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_text_outside_the_pattern_is_invalid(text: str) -> None:
    if re.fullmatch(URL_PATTERN, text) is None:
        with pytest.raises(InvalidSourceUrl):
            parse_source_url(text)
