"""Blob storage: the `BlobStore` protocol and one implementation per backend."""

from chatmedia.storage.base import (
    CHUNK_SIZE,
    BlobMissing,
    BlobStat,
    BlobStore,
    Closing,
    LocalPaths,
    PieceStaging,
    Presigner,
    Segments,
    StagedBlob,
    StoreUnavailable,
    TooManyParts,
    nothing,
    segment_start,
)

__all__ = [
    "CHUNK_SIZE",
    "BlobMissing",
    "BlobStat",
    "BlobStore",
    "Closing",
    "LocalPaths",
    "PieceStaging",
    "Presigner",
    "Segments",
    "StagedBlob",
    "StoreUnavailable",
    "TooManyParts",
    "nothing",
    "segment_start",
]
