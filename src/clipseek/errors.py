"""Exceptions raised by clipseek.

Every error a user can cause derives from :class:`ClipseekError`, so the CLI and the REST API can
turn it into a clear message and a non-zero exit / 4xx answer without a traceback::

    ClipseekError
    ├── CollectionNotFound        an unknown collection name
    ├── CollectionExists          create() of a name that is already taken
    ├── EncoderMismatch           querying or filling a collection with another encoder than it was built with
    ├── UnknownPlugin             an encoder/store/source name nobody registered
    ├── BadFilter                 a malformed filter, or one on a field the collection does not have
    ├── BadVector                 a query or stored vector of the wrong shape, dtype or values
    ├── BadImage                  an image that cannot be read (corrupt, empty, too large, not an image)
    │   ├── TooManyPixels         an image over a pixel limit (a possible decompression bomb)
    │   └── DownloadError         a URL that cannot be downloaded (with a reason key: http_404, timeout ...)
    ├── RecordNotFound            --like / get of an id that is not in the collection
    ├── VectorOnly                asking a vector-only collection (no model) for text, images or labels
    ├── CollectionDamaged         a collection file that is truncated, corrupt or unreadable (see `clipseek check`)
    ├── StoreUnavailable          a store's server (Milvus) cannot be reached or stopped answering
    └── ModelUnavailable          an encoder whose weights or packages are missing
"""

from __future__ import annotations


class ClipseekError(Exception):
    """Base class for errors caused by input or configuration, not by a bug."""


class CollectionNotFound(ClipseekError):
    pass


class CollectionExists(ClipseekError):
    pass


class EncoderMismatch(ClipseekError):
    pass


class UnknownPlugin(ClipseekError):
    pass


class BadFilter(ClipseekError):
    pass


class BadVector(ClipseekError):
    pass


class BadImage(ClipseekError):
    pass


class TooManyPixels(BadImage):
    """An image whose header declares more pixels than the limit; refused before decoding."""


class RecordNotFound(ClipseekError):
    pass


class ModelUnavailable(ClipseekError):
    pass


class VectorOnly(ClipseekError):
    """A text or image query, an image ingest or labels on a collection that holds vectors only."""


class CollectionDamaged(ClipseekError):
    """A collection's files are damaged or unreadable (the message names the file)."""


class StoreUnavailable(ClipseekError):
    """A store's server cannot be reached, or stopped answering mid-call (the message names it).
    Writes are upserts by id, so running the same command again once it is back is safe."""


class DownloadError(BadImage):
    """A URL that could not be downloaded; ``reason`` is a short key (``http_404``, ``timeout`` ...,
    see ``net.DOWNLOAD_REASONS``) the ingest report counts by."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
