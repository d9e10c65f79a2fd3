"""Blob storage: the `BlobStore` protocol and one implementation per backend."""

from chatmedia.storage.base import (
    CHUNK_SIZE,
    BlobMissing,
    BlobStat,
    BlobStore,
    LocalPaths,
    Presigner,
    Segments,
    StagedBlob,
    StoreUnavailable,
)

__all__ = [
    "CHUNK_SIZE",
    "BlobMissing",
    "BlobStat",
    "BlobStore",
    "LocalPaths",
    "Presigner",
    "Segments",
    "StagedBlob",
    "StoreUnavailable",
]
