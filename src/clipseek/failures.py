"""Why an item was skipped: the reason keys, in one place.

Every skipped item of an index run is a :class:`Failure`: its id, a short machine-readable reason
key (the keys below), the human message and where it came from (the manifest, folder or URL). The
summary counts failures by key, ``--failures FILE.jsonl`` writes them one per line.

An exception may carry its own key as a ``reason`` attribute (a download error sets ``http_404``
or ``timeout``, say); otherwise :func:`reason_of` derives it from the loader's message.
"""

from __future__ import annotations

from typing import NamedTuple

from .net import DOWNLOAD_REASONS

#: reason key -> what it means (``clipseek index --help`` and the docs list these)
REASONS: dict[str, str] = {
    **DOWNLOAD_REASONS,  # timeout, refused_address, too_many_redirects, truncated, ... (net.py)
    "missing_file": "the file does not exist",
    "unreadable": "the file or folder cannot be read (permissions, I/O error)",
    "not_a_file": "the path is a folder, not a file",
    "empty_file": "the file or data is empty",
    "not_an_image": "the bytes are not an image Pillow can read",
    "corrupt_image": "the image is corrupt or truncated",
    "too_large": "the image (or download) is larger than the limit",
    "bad_row": "a manifest row that cannot be used (no image value, wrong type, bad JSON)",
    "http_error": "the server answered with an error status (the key is http_<status> when known)",
    "other": "any other error (the message says what)",
}

# Loader messages (images.load_image) -> key; matched on the text after "<id>: ".
_MESSAGE_KEYS: tuple[tuple[str, str], ...] = (
    ("no such file", "missing_file"),
    ("permission denied", "unreadable"),
    ("is a directory", "not_a_file"),
    ("empty file", "empty_file"),
    ("empty data", "empty_file"),
    ("not an image", "not_an_image"),
    ("corrupt or truncated", "corrupt_image"),
    ("image has no pixels", "corrupt_image"),
    ("image too large", "too_large"),
)


class Failure(NamedTuple):
    """One skipped item: ``id`` (or file and row), the ``message``, its ``reason`` key, its ``source``."""

    id: str
    message: str
    reason: str = "other"
    source: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "reason": self.reason, "message": self.message, "source": self.source}


def reason_of(exc: BaseException) -> str:
    """The reason key of an exception that made the pipeline skip an item."""
    key = getattr(exc, "reason", None)
    if isinstance(key, str) and key:
        return key
    return reason_of_message(str(exc))


def reason_of_message(message: str) -> str:
    for text, key in _MESSAGE_KEYS:
        if text in message:
            return key
    return "other"
