"""What only the local backend promises: where blobs live on disk."""

import hashlib
from pathlib import Path

import pytest

from chatmedia.storage.local import LocalBlobStore
from tests.contract.test_blob_store import stream

pytestmark = pytest.mark.anyio


async def test_blobs_are_sharded_by_hash(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    staged = await store.put(stream(b"hello"))
    await store.promote(staged)
    digest = hashlib.sha256(b"hello").hexdigest()
    path = tmp_path / digest[:2] / digest[2:4] / digest
    assert store.local_path(digest) == path
    assert path.read_bytes() == b"hello"


@pytest.mark.parametrize("key", ["../../etc/passwd", "A" * 64, "", "0" * 63, "0" * 64 + "/x"])
def test_paths_come_only_from_hashes(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="not a blob key"):
        LocalBlobStore(tmp_path).local_path(key)
