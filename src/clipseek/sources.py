"""The Source seam: where image records come from.

A source yields :class:`~clipseek.types.ImageRef` items (an id, where the bytes are, metadata and a
cheap fingerprint). It never opens images; the ingest pipeline does. Built-in sources:

- :class:`FolderSource`: every image file under a folder (recursive, hidden files and folders skipped);
- :class:`FileListSource`: explicit image files.

The id of a file is its absolute, resolved path: stable across runs and unique across folders,
so indexing two folders into one collection never overwrites a record.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from .errors import ClipseekError
from .images import IMAGE_SUFFIXES
from .types import ImageRef


class Source(ABC):
    @abstractmethod
    def __iter__(self) -> Iterator[ImageRef]: ...

    #: items the source itself had to pass over (unreadable folders ...): (what, why)
    problems: list[tuple[str, str]]


def file_ref(path: Path, root: Path | None = None) -> ImageRef:
    st = path.stat()
    meta = {
        "path": str(path),
        "file_name": path.name,
        "folder": str(path.parent.relative_to(root)) if root is not None else str(path.parent),
        "file_size": st.st_size,
        "modified_at": datetime.fromtimestamp(st.st_mtime, tz=timezone.utc).isoformat(timespec="seconds"),
    }
    if root is not None and meta["folder"] == ".":
        meta["folder"] = ""
    return ImageRef(id=str(path), path=path, metadata=meta, fingerprint=f"{st.st_size}:{st.st_mtime_ns}")


class FolderSource(Source):
    """All image files below ``root`` (sorted, so progress and ids are reproducible)."""

    def __init__(self, root: str | Path, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> None:
        self.root = Path(root).expanduser().resolve()
        self.suffixes = {s.lower() for s in suffixes}
        self.problems = []
        if not self.root.exists():
            raise ClipseekError(f"{root}: no such file or folder")
        if not self.root.is_dir():
            raise ClipseekError(f"{root}: not a folder")

    def __iter__(self) -> Iterator[ImageRef]:
        def onerror(e: OSError) -> None:
            self.problems.append((str(e.filename), e.strerror or str(e)))

        for dirpath, dirnames, filenames in os.walk(self.root, onerror=onerror):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if fn.startswith(".") or Path(fn).suffix.lower() not in self.suffixes:
                    continue
                p = Path(dirpath) / fn
                try:
                    yield file_ref(p, self.root)
                except OSError as e:
                    self.problems.append((str(p), e.strerror or str(e)))


class FileListSource(Source):
    """Explicit files (any suffix: the user asked for them, so a non-image is reported, not skipped)."""

    def __init__(self, paths: Iterable[str | Path]) -> None:
        self.paths = [Path(p).expanduser().resolve() for p in paths]
        self.problems = []

    def __iter__(self) -> Iterator[ImageRef]:
        for p in self.paths:
            try:
                yield file_ref(p)
            except FileNotFoundError:
                self.problems.append((str(p), "no such file"))
            except OSError as e:
                self.problems.append((str(p), (e.strerror or str(e)).lower()))


def source_for(target: str | Path) -> Source:
    """The right built-in source for a CLI argument: a folder or an image file."""
    s = str(target)
    if s.startswith(("http://", "https://")):
        raise ClipseekError(
            f"{s}: indexing from URLs is not supported yet; download the images to a folder first"
        )
    p = Path(target).expanduser()
    if p.is_dir():
        return FolderSource(p)
    if p.exists():
        return FileListSource([p])
    raise ClipseekError(f"{target}: no such file or folder")
