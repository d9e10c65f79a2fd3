"""Where media work finds its bytes and keeps its previews.

A preview is kept in the blob store under a key derived from its blob and size (a SHA-256
like every key, of another preimage than any content), so that whoever makes it again
writes the same key, and whoever deletes the blob knows what to delete without asking."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import replace

from anyio import to_thread

from chatmedia.media.kinds import PREVIEW_SIZES
from chatmedia.services import Services


def preview_key(sha256: str, size: int) -> str:
    """The store key of blob `sha256`'s preview for box `size`."""
    return hashlib.sha256(f"chatmedia preview\0{sha256}\0{size}".encode()).hexdigest()


async def store_preview(services: Services, sha256: str, size: int, data: bytes) -> str:
    """Keep a preview; its key."""
    staged = await services.store.put(_once(data))
    staged = replace(staged, key=preview_key(sha256, size))
    await services.store.promote(staged)
    return staged.key


async def delete_previews(services: Services, sha256: str) -> None:
    """Remove every preview of a blob (there may be none)."""
    for size in PREVIEW_SIZES:
        await services.store.delete(preview_key(sha256, size))


@asynccontextmanager
async def local_copy(services: Services, sha256: str, size: int) -> AsyncIterator[str]:
    """A path to the blob's bytes on this machine: the blob itself in a local store, else
    a temporary copy streamed from the store, removed afterwards."""
    if services.local_paths is not None:
        yield str(services.local_paths.local_path(sha256))
        return
    with tempfile.NamedTemporaryFile(prefix="chatmedia-media-") as copy:
        async with aclosing(await services.store.open_range(sha256, 0, size)) as chunks:
            async for chunk in chunks:
                await to_thread.run_sync(copy.write, chunk)
        await to_thread.run_sync(copy.flush)
        yield copy.name


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
