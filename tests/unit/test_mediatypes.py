import random

import pytest

from chatmedia.mediatypes import OCTET_STREAM, TypePolicy, detect, is_passive, parse_type_list
from tests.conftest import HTML_BYTES, PDF_BYTES, png_bytes


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (png_bytes(), "image/png"),
        (PDF_BYTES, "application/pdf"),
        (HTML_BYTES, "text/html"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "image/svg+xml"),
        (b"hello world\n", "text/plain"),
        (b"", OCTET_STREAM),
        (random.Random(1).randbytes(4096), OCTET_STREAM),
    ],
)
def test_detect_from_bytes(data: bytes, expected: str) -> None:
    assert detect(data) == expected


def test_policy() -> None:
    images = TypePolicy(allowed=("image/*",), blocked=("image/svg+xml",))
    assert images.permits("image/png")
    assert not images.permits("image/svg+xml")
    assert not images.permits("application/pdf")
    assert TypePolicy().permits("anything/else")
    assert not TypePolicy(blocked=("*/*",)).permits("image/png")


def test_passive_types() -> None:
    for passive in ("image/png", "image/jpeg", "audio/ogg", "video/mp4", "text/plain"):
        assert is_passive(passive)
    for active in ("text/html", "image/svg+xml", "application/pdf", "application/xml", "text/xml"):
        assert not is_passive(active)


def test_parse_type_list() -> None:
    assert parse_type_list("image/*, pdf, .jpg,") == ("image/*", "application/pdf", "image/jpeg")
    with pytest.raises(ValueError, match="not a MIME type pattern"):
        parse_type_list("image/")
