"""Blob storage: the `BlobStore` protocol and one implementation per backend."""

from chatmedia.storage.base import (
    CHUNK_SIZE,
    BlobMissing,
    BlobStat,
    BlobStore,
    LocalPaths,
    PieceStaging,
    Presigner,
    Segments,
    StagedBlob,
    StoreUnavailable,
    segment_start,
)

__all__ = [
    "CHUNK_SIZE",
    "BlobMissing",
    "BlobStat",
    "BlobStore",
    "LocalPaths",
    "PieceStaging",
    "Presigner",
    "Segments",
    "StagedBlob",
    "StoreUnavailable",
    "segment_start",
]
