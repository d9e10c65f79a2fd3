import unicodedata
from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st

from chatmedia.naming import (
    MAX_NAME_LENGTH,
    content_disposition,
    sanitize_name,
    stored_name,
    with_suffix,
)

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_sanitize_strips_directories() -> None:
    assert sanitize_name("../../etc/passwd") == "passwd"
    assert sanitize_name("C:\\Users\\me\\photo.jpg") == "photo.jpg"
    assert sanitize_name("dir/") == "file"


def test_sanitize_removes_controls_and_bidi() -> None:
    assert sanitize_name("inv\u202eoice.exe\x00.pdf") == "invoice.exe.pdf"
    assert sanitize_name("a\r\nb\tc.txt") == "abc.txt"


def test_sanitize_defaults_for_empty_and_dots() -> None:
    assert sanitize_name(None) == "file"
    assert sanitize_name("") == "file"
    assert sanitize_name("..") == "file"
    assert sanitize_name(" . ") == "file"
    assert sanitize_name("", default="file.png") == "file.png"


def test_sanitize_caps_length_and_keeps_extension() -> None:
    name = sanitize_name("x" * 1000 + ".jpeg")
    assert len(name) == MAX_NAME_LENGTH
    assert name.endswith(".jpeg")


@given(st.text(max_size=600))
def test_sanitized_names_are_safe(raw: str) -> None:
    name = sanitize_name(raw)
    assert 0 < len(name) <= MAX_NAME_LENGTH
    assert "/" not in name
    assert "\\" not in name
    assert name not in (".", "..")
    assert not any(c in BIDI for c in name)
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in name)
    assert name == name.strip()
    assert sanitize_name(name) == name  # idempotent


@given(st.text(max_size=300))
def test_content_disposition_is_ascii_and_round_trips(raw: str) -> None:
    name = sanitize_name(raw)
    header = content_disposition(name, inline=False)
    header.encode("ascii")  # a header value must be ASCII
    assert header.startswith('attachment; filename="')
    assert "\r" not in header
    assert "\n" not in header
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert "\\" not in fallback
    if "filename*=" in header:
        assert unquote(header.split("filename*=UTF-8''", 1)[1]) == name
    else:
        assert fallback == name


def test_content_disposition_forms() -> None:
    assert content_disposition("a.png", inline=True) == 'inline; filename="a.png"'
    assert content_disposition("résumé.pdf", inline=False) == (
        "attachment; filename=\"resume.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
    )


def test_stored_names() -> None:
    assert stored_name("c1", "a.png") == "c1_a.png"
    assert stored_name(None, "a.png") == "a.png"
    assert with_suffix("c1_a.png", "ab12cd34") == "c1_a-ab12cd34.png"
    assert with_suffix("README", "ab12cd34") == "README-ab12cd34"
