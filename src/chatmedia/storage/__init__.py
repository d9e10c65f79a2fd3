"""Blob storage: the `BlobStore` protocol and one implementation per backend."""

from chatmedia.storage.base import (
    CHUNK_SIZE,
    BlobMissing,
    BlobStat,
    BlobStore,
    LocalPaths,
    StagedBlob,
)

__all__ = ["CHUNK_SIZE", "BlobMissing", "BlobStat", "BlobStore", "LocalPaths", "StagedBlob"]
