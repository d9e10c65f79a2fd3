"""The scanner a node scans with: clamd, and the signature version it last reported."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable

from chatmedia.scanning.clamd import Clamd, ScannerUnavailable, Verdict

log = logging.getLogger("chatmedia.scanning")


class Scanner:
    """clamd at `url`, each scan bounded by `timeout` seconds. `version` is clamd's
    version text as last read (its signature version changes with each database update);
    None until first read."""

    def __init__(self, url: str, timeout: float) -> None:
        self.clamd = Clamd(url, scan_timeout=timeout)
        self.version: str | None = None

    async def scan(self, chunks: AsyncIterable[bytes]) -> Verdict:
        """What clamd finds in the bytes (ScannerUnavailable, ScanFailed)."""
        return await self.clamd.scan(chunks)

    async def read_version(self) -> str | None:
        """Ask clamd for its version now (None when it does not answer), and keep it."""
        try:
            self.version = await self.clamd.version()
        except ScannerUnavailable as e:
            log.warning("clamd does not answer: %s", e)
            return None
        return self.version

    async def ready(self) -> bool:
        """Whether clamd answers."""
        return await self.clamd.ping()
