"""clipseek: self-hosted image search with CLIP-family models.

The public API is what this module exports; everything else may change between versions.
"""

from .encoders.base import Calibration, Encoder
from .engine import Collection, Engine, SearchResult, default_data_dir
from .errors import (
    BadFilter,
    BadImage,
    BadVector,
    ClipseekError,
    CollectionExists,
    CollectionNotFound,
    EncoderMismatch,
    ModelUnavailable,
    RecordNotFound,
    UnknownPlugin,
)
from .filters import Condition
from .hookspecs import hookimpl
from .ingest import IngestReport
from .sources import FileListSource, FolderSource, Source
from .stores.base import VectorStore
from .types import EncoderInfo, Hit, ImageRef, Record

__all__ = [
    "BadFilter",
    "BadImage",
    "BadVector",
    "Calibration",
    "ClipseekError",
    "Collection",
    "CollectionExists",
    "CollectionNotFound",
    "Condition",
    "Encoder",
    "EncoderInfo",
    "EncoderMismatch",
    "Engine",
    "FileListSource",
    "FolderSource",
    "Hit",
    "ImageRef",
    "IngestReport",
    "ModelUnavailable",
    "Record",
    "RecordNotFound",
    "SearchResult",
    "Source",
    "UnknownPlugin",
    "VectorStore",
    "default_data_dir",
    "hookimpl",
]
