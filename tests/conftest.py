"""Fixtures shared by every test layer."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from chatmedia.config import Settings, load_settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings over a fresh data folder; keyword arguments are CHATMEDIA_* values."""

    def make(**values: str) -> Settings:
        env = {"CHATMEDIA_DATA_DIR": str(tmp_path / "data")}
        env |= {"CHATMEDIA_" + k.upper(): v for k, v in values.items()}
        return load_settings(env, cwd=tmp_path)

    return make


def png_bytes(width: int = 4, height: int = 4) -> bytes:
    """A valid PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


PDF_BYTES = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
HTML_BYTES = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>\n"


def unsigned(file: dict[str, object]) -> dict[str, object]:
    """A File as JSON without its URL's signature, which is made afresh for each answer."""
    return file | {"url": str(file["url"]).split("?")[0]}
