"""The Source seam: where image records come from.

A source yields :class:`~clipseek.types.ImageRef` items (an id, where the bytes are, metadata and a
cheap fingerprint). It never opens images; the ingest pipeline does. Built-in sources:

- :class:`FolderSource`: every image file under a folder (recursive, hidden files and folders skipped);
- :class:`FileListSource`: explicit image files;
- manifests (CSV/TSV, Parquet, JSON Lines, JSON, plain lists, stdin, Hugging Face datasets saved
  to disk, WebDataset shards): see :mod:`clipseek.manifest`.

Sources are streams: nothing holds all refs. ``count()`` gives the number of items when it is
cheap to know (for the progress bar), else None. ``problems`` lists the items a source had to pass
over, as :class:`~clipseek.failures.Failure`; it is complete once the iteration has ended.

The id of a file is its absolute, resolved path: stable across runs and unique across folders,
so indexing two folders into one collection never overwrites a record.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import ClipseekError
from .failures import Failure
from .images import IMAGE_SUFFIXES
from .manifest import Columns, manifest_source
from .types import ImageRef


class Source(ABC):
    @abstractmethod
    def __iter__(self) -> Iterator[ImageRef]: ...

    def count(self) -> int | None:
        """How many items the source will yield, when that is cheap to know; else None."""
        return None

    #: items the source itself had to pass over (unreadable folders ...)
    problems: list[Failure]


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
            self.problems.append(_os_failure(str(e.filename), e))

        for p in self._files(onerror):
            try:
                yield file_ref(p, self.root)
            except OSError as e:
                self.problems.append(_os_failure(str(p), e))

    def _files(self, onerror: Callable[[OSError], None] | None = None) -> Iterator[Path]:
        for dirpath, dirnames, filenames in os.walk(self.root, onerror=onerror):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if not fn.startswith(".") and Path(fn).suffix.lower() in self.suffixes:
                    yield Path(dirpath) / fn

    def count(self) -> int:
        """A walk without stat calls: far cheaper than decoding, and the bar gets an ETA."""
        return sum(1 for _ in self._files())


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
                self.problems.append(Failure(str(p), "no such file", "missing_file", str(p)))
            except OSError as e:
                self.problems.append(_os_failure(str(p), e))

    def count(self) -> int:
        return len(self.paths)


def _os_failure(what: str, e: OSError) -> Failure:
    why = (e.strerror or str(e)).lower()
    return Failure(what, why, "missing_file" if isinstance(e, FileNotFoundError) else "unreadable", what)


def source_for(target: str | Path, columns: Columns | None = None) -> Any:
    """The right built-in source for a CLI argument: a manifest (by suffix: .csv .tsv .parquet
    .jsonl .ndjson .json .txt .tar; ``-`` for stdin; a folder holding a Hugging Face dataset or
    only .tar shards), else a folder of images or an image file.

    ``columns`` names the image, caption and id columns of a manifest (default: detected)."""
    s = str(target)
    if s.startswith(("http://", "https://")):
        raise ClipseekError(
            f"{s}: indexing from URLs is not supported yet; download the images to a folder first"
        )
    manifest = manifest_source(target, columns or Columns())
    if manifest is not None:
        return manifest
    if columns is not None and columns.given():
        raise ClipseekError(
            f"{target}: --image-column, --caption-column and --id-column apply to manifests "
            "(.csv .tsv .parquet .jsonl .json .txt .tar, Hugging Face dataset folders), not to image folders"
        )
    p = Path(target).expanduser()
    if p.is_dir():
        return FolderSource(p)
    if p.exists():
        return FileListSource([p])
    raise ClipseekError(f"{target}: no such file or folder")
