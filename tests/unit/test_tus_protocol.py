"""The tus headers' parsers (chatmedia.uploads.protocol): what they accept gives back what
was meant; anything else, however malformed, is InvalidUploadHeader (400) or
TusVersionUnsupported (412), never another exception (a 500)."""

from __future__ import annotations

import base64
import hashlib
import string
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatmedia.errors import InvalidUploadHeader, TusVersionUnsupported
from chatmedia.uploads import protocol
from chatmedia.uploads.protocol import (
    MAX_METADATA_LENGTH,
    MAX_METADATA_PAIRS,
    Checksum,
    check_version,
    checksum,
    creation_length,
    encode_metadata,
    metadata,
    number,
)

# Written out here rather than taken from the module: the tests state the protocol.
KEYS = st.from_regex(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}", fullmatch=True)
DIGEST_SIZES = {"sha1": 20, "sha256": 32, "md5": 16}
# What Starlette can hand over as a header's value: it decodes the raw bytes as latin-1.
LATIN1 = st.characters(max_codepoint=0xFF)
B64_ALPHABET = string.ascii_letters + string.digits + "+/"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def parse_metadata(text: str) -> dict[str, str]:
    return metadata({"upload-metadata": text})


# --- Upload-Metadata -------------------------------------------------------------------------


@given(pairs=st.dictionaries(KEYS, st.text(max_size=20), max_size=MAX_METADATA_PAIRS))
def test_metadata_round_trips(pairs: dict[str, str]) -> None:
    header = encode_metadata(pairs)
    assert len(header) <= MAX_METADATA_LENGTH  # 64 pairs of 64 + 2 + 108 characters at most
    assert parse_metadata(header) == pairs


@given(pairs=st.dictionaries(KEYS, st.text(max_size=20), min_size=1, max_size=8))
def test_metadata_takes_spaces_around_pairs_and_a_key_alone(pairs: dict[str, str]) -> None:
    spaced = " , ".join(f"{k} {b64(v.encode())}" if v else k for k, v in pairs.items())
    assert parse_metadata(f"  {spaced}  ") == pairs


@pytest.mark.parametrize("text", [None, "", "   "])
def test_no_metadata_is_no_pairs(text: str | None) -> None:
    assert metadata({} if text is None else {"upload-metadata": text}) == {}


def _malformed_base64() -> st.SearchStrategy[str]:
    """Text that is not base64, with no space or comma (which would split it otherwise)."""
    valid = st.binary(max_size=30).map(b64)
    outside = st.sampled_from("-_!*.~#$%&'^`|:;?@\\\"<>()[]{}")
    foreign = st.tuples(valid, st.integers(0, 40), outside).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]
    )
    unpadded = (
        st.binary(min_size=1, max_size=30)
        .filter(lambda b: len(b) % 3)
        .map(lambda b: b64(b).rstrip("="))
    )
    one_over = st.tuples(st.binary(max_size=30).map(lambda b: b64(b[: len(b) // 3 * 3])),
                         st.sampled_from(B64_ALPHABET)).map("".join)  # fmt: skip
    inner_padding = st.tuples(
        st.binary(min_size=1, max_size=5).filter(lambda b: len(b) % 3), st.binary(min_size=1)
    ).map(lambda t: b64(t[0]) + b64(t[1]))
    return foreign | unpadded | one_over | inner_padding


def _not_utf8() -> st.SearchStrategy[bytes]:
    def undecodable(data: bytes) -> bool:
        try:
            data.decode()
        except UnicodeDecodeError:
            return True
        return False

    return st.binary(min_size=1, max_size=20).filter(undecodable)


@st.composite
def malformed_metadata(draw: st.DrawFn) -> str:
    """Valid pairs, and then one thing wrong with them."""
    pairs = draw(st.dictionaries(KEYS, st.text(max_size=10), max_size=6))
    items = [f"{k} {b64(v.encode())}" for k, v in pairs.items()]
    flaw = draw(st.sampled_from(["base64", "utf-8", "duplicate", "key", "value", "long", "many"]))
    if flaw == "long":
        value = "a" * draw(st.integers(MAX_METADATA_LENGTH * 3 // 4, MAX_METADATA_LENGTH))
        return ",".join([*items, f"{draw(KEYS)} {b64(value.encode())}"])
    if flaw == "many":
        count = draw(st.integers(MAX_METADATA_PAIRS + 1, MAX_METADATA_PAIRS * 3))
        return ",".join(f"k{i} {b64(b'v')}" for i in range(count))
    key = draw(KEYS.filter(lambda k: k not in pairs))
    if flaw == "base64":
        bad = f"{key} {draw(_malformed_base64())}"
    elif flaw == "utf-8":
        bad = f"{key} {b64(draw(_not_utf8()))}"
    elif flaw == "duplicate":
        if not pairs:
            items.append(f"{key} {b64(b'first')}")
        else:
            key = draw(st.sampled_from(sorted(pairs)))
        bad = f"{key} {b64(draw(st.text(max_size=10)).encode())}"
    elif flaw == "key":  # a character outside the token's, or too long
        bad = draw(
            st.tuples(KEYS, st.sampled_from('"(),/:;<=>?@[\\]{}é\x00')).map("".join)
            | st.just("k" * 65)
        )
        bad += f" {b64(b'v')}"
    else:  # two base64 words
        bad = f"{key} {b64(b'one')} {b64(b'two')}"
    items.insert(draw(st.integers(0, len(items))), bad)
    return ",".join(items)


@given(text=malformed_metadata())
@example(text="a YQ==,a Yg==")  # a key twice
@example(text="a YQ,b Yg==")  # padding missing
@example(text="a /w==")  # b"\xff"
@example(text="a YQ== Yg==")
def test_malformed_metadata_is_an_invalid_header(text: str) -> None:
    with pytest.raises(InvalidUploadHeader):
        parse_metadata(text)


def test_metadata_limits_are_exact() -> None:
    pairs = {f"k{i}": "" for i in range(MAX_METADATA_PAIRS)}
    assert parse_metadata(encode_metadata(pairs)) == pairs
    with pytest.raises(InvalidUploadHeader):
        parse_metadata(encode_metadata(pairs | {"one-more": ""}))
    longest = "kkk " + "A" * (MAX_METADATA_LENGTH - 4)  # valid base64: a multiple of 4
    assert len(longest) == MAX_METADATA_LENGTH
    assert parse_metadata(longest) == {"kkk": "\x00" * ((MAX_METADATA_LENGTH - 4) // 4 * 3)}
    with pytest.raises(InvalidUploadHeader):
        parse_metadata("k" + longest)


# --- Upload-Checksum -------------------------------------------------------------------------


@given(algorithm=st.sampled_from(sorted(DIGEST_SIZES)), digest=st.binary(max_size=80))
def test_a_checksum_takes_exactly_its_algorithms_digest_length(
    algorithm: str, digest: bytes
) -> None:
    headers = {"upload-checksum": f"{algorithm} {b64(digest)}"}
    if len(digest) != DIGEST_SIZES[algorithm]:
        with pytest.raises(InvalidUploadHeader):
            checksum(headers)
        return
    parsed = checksum(headers)
    assert parsed == Checksum(algorithm, digest)
    hasher = parsed.hasher()
    hasher.update(b"chunk")
    assert hasher.digest() == hashlib.new(algorithm, b"chunk").digest()


@given(
    algorithm=st.text(LATIN1.filter(lambda c: c not in " \t"), min_size=1, max_size=10)
    .filter(lambda a: a not in DIGEST_SIZES)
    .filter(lambda a: a.strip() == a),
    size=st.sampled_from(sorted(DIGEST_SIZES.values())),
)
@example(algorithm="SHA256", size=32)
@example(algorithm="sha512", size=32)
@example(algorithm="crc32", size=16)
def test_an_unknown_algorithm_is_refused(algorithm: str, size: int) -> None:
    with pytest.raises(InvalidUploadHeader):
        checksum({"upload-checksum": f"{algorithm} {b64(bytes(size))}"})


@given(algorithm=st.sampled_from(sorted(DIGEST_SIZES)), digest=_malformed_base64())
def test_a_checksum_that_is_not_base64_is_refused(algorithm: str, digest: str) -> None:
    with pytest.raises(InvalidUploadHeader):
        checksum({"upload-checksum": f"{algorithm} {digest}"})


def test_no_checksum_is_none() -> None:
    assert checksum({}) is None


# --- Numbers: Upload-Offset, Upload-Length ---------------------------------------------------


@given(
    value=st.integers(0, 10**19 - 1),
    zeros=st.integers(0, 3),
    spaces=st.sampled_from(["", " ", "\t"]),
)
def test_a_number_is_its_decimal_value(value: int, zeros: int, spaces: str) -> None:
    text = f"{spaces}{'0' * zeros}{value}{spaces}"
    expected = value if len(text.strip()) <= 19 else None
    if expected is None:
        with pytest.raises(InvalidUploadHeader):
            number({"upload-offset": text}, "Upload-Offset")
    else:
        assert number({"upload-offset": text}, "Upload-Offset") == expected


@given(
    text=st.one_of(
        st.integers(min_value=1).map(lambda n: f"-{n}"),
        st.integers(min_value=0).map(lambda n: f"+{n}"),
        st.integers(min_value=0).map(lambda n: f"{n:#x}"),
        st.integers(min_value=10).map(lambda n: f"{n:x}").filter(lambda s: not s.isdigit()),
        st.integers(min_value=10**19),
        st.tuples(
            st.integers(1, 10**6), st.sampled_from([" ", "_", ".", ",", "\t"]), st.integers(0, 999)
        ).map(lambda t: f"{t[0]}{t[1]}{t[2]}"),
        # Digits Python's int() takes but HTTP's do not: Arabic-Indic, full-width, superscript.
        st.sampled_from(["", " ", "1e3", "1.0", "\u0663", "\uff11", "\u00b2", "NaN", "0b1", "0o7"]),
    ).map(str)
)
@example(text="10000000000000000000")  # 20 digits
@example(text="00000000000000000001")
@example(text="7\xa0")  # white space to Python, not to HTTP (RFC 9110 §5.6.3: SP, HTAB)
@example(text="\x0b7")
@example(text="7\x1f")
def test_anything_else_is_not_a_number(text: str) -> None:
    with pytest.raises(InvalidUploadHeader):
        number({"upload-length": text}, "Upload-Length")


def test_an_absent_number_is_none() -> None:
    assert number({"upload-length": "5"}, "Upload-Offset") is None


# --- Creation: Upload-Length or Upload-Defer-Length ------------------------------------------


@given(
    length=st.none() | st.integers(0, 10**18),
    deferred=st.none() | st.sampled_from(["1", " 1 ", "0", "2", "true", "", "01"]),
)
def test_creation_takes_exactly_one_length(length: int | None, deferred: str | None) -> None:
    headers = {"upload-length": str(length)} if length is not None else {}
    headers |= {"upload-defer-length": deferred} if deferred is not None else {}
    if length is not None and deferred is None:
        assert creation_length(headers) == length
    elif length is None and deferred is not None and deferred.strip() == "1":
        assert creation_length(headers) is None
    else:
        with pytest.raises(InvalidUploadHeader):
            creation_length(headers)


# --- Tus-Resumable ---------------------------------------------------------------------------


def test_version_1_0_0_is_spoken() -> None:
    check_version({"tus-resumable": "1.0.0"})


@given(version=st.none() | st.text(LATIN1).filter(lambda v: v != "1.0.0"))
@example(version="1.0")
@example(version="0.2.2")
@example(version="1.0.0 ")
@example(version="")
def test_any_other_version_is_refused(version: str | None) -> None:
    with pytest.raises(TusVersionUnsupported):
        check_version({} if version is None else {"tus-resumable": version})


# --- Any text at all -------------------------------------------------------------------------

# Pieces of the headers' syntax glued to arbitrary text, to get past the first checks.
_PIECES = st.one_of(
    st.sampled_from(["sha1", "sha256", "md5", "1.0.0", "1", "0", " ", ",", "=", "==", "k", "-"]),
    st.binary(max_size=24).map(b64),
    st.text(LATIN1, max_size=6),
)
HEADER_TEXT = st.text(LATIN1) | st.lists(_PIECES, max_size=12).map("".join)
_PARSERS: dict[str, Callable[[Mapping[str, str]], Any]] = {
    "tus-resumable": check_version,
    "upload-offset": lambda headers: number(headers, "Upload-Offset"),
    "upload-length": creation_length,
    "upload-defer-length": creation_length,
    "upload-metadata": metadata,
    "upload-checksum": checksum,
}


@pytest.mark.parametrize("header", list(_PARSERS))
@given(text=HEADER_TEXT, other=st.none() | HEADER_TEXT)
# A byte past ASCII reaches base64.b64decode as a ValueError, not a binascii.Error: it was
# a 500 once.
@example(text="k \xe9", other=None)
@example(text="sha256 \xe9", other=None)
# str.strip() takes \x1c-\x1f for white space and int() does not: number() checked the
# one and converted the other, a ValueError once.
@example(text="0\x1f", other=None)
@example(text="1", other="0\x1f")
def test_any_text_is_a_value_or_a_named_error(header: str, text: str, other: str | None) -> None:
    headers = {header: text}
    if other is not None:  # the same text in the other headers too
        headers |= {name: other for name in _PARSERS if name != header}
    with suppress(InvalidUploadHeader, TusVersionUnsupported):
        _PARSERS[header](headers)


def test_the_protocol_says_what_it_speaks() -> None:
    assert protocol.TUS_VERSION == "1.0.0"
    assert set(protocol.CHECKSUM_ALGORITHMS) == set(DIGEST_SIZES)
