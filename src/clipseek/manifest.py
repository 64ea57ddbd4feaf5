"""Manifest sources: tables of image paths or URLs with metadata, read as streams.

Formats: CSV/TSV, Parquet (read by row group, never whole), JSON Lines, JSON (an array of objects,
parsed incrementally), plain lists (one path or URL per line; ``-`` is stdin), a Hugging Face
dataset saved with ``save_to_disk`` (its Arrow files, read with pyarrow) and WebDataset ``.tar``
shards (image members with ``.json``/``.txt`` members sharing their key).

One row becomes one :class:`~clipseek.types.ImageRef`:

- the image column holds a path (relative to the manifest's folder), an http(s) URL (``url`` ref,
  loaded by the ingest pipeline) or image bytes (Hugging Face ``Image`` features, tar members);
- the id is the id column, else the absolute resolved path (as for folders), else the URL;
- the caption column is stored as metadata ``caption``; every other column is metadata, typed
  (numbers stay numbers, timestamps become ISO-8601 strings, lists stay lists; text cells of CSV
  files that look like numbers or timestamps are converted);
- the fingerprint lets a re-run skip the row: the file's size and mtime for paths, a hash of the
  URL (or bytes) for the others, each with a hash of the row's metadata, so an edited caption is
  re-indexed.

A row that cannot be used is skipped and listed in ``problems`` as a ``bad_row`` failure naming
the file, row (1-based, header not counted) and column. Ids repeated inside one manifest: the last
row wins (the store's upsert replaces), and they are listed in ``duplicates`` after the run: the
source keeps an 8-byte hash per row for that (80 MB for 10 million rows), never the rows.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import math
import re
import sys
import tarfile
from array import array
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from .errors import ClipseekError
from .failures import Failure
from .types import ImageRef

IMAGE_COLUMNS = ("image", "path", "url", "image_url", "file")
CAPTION_COLUMNS = ("caption", "text")
ID_COLUMNS = ("id",)

TABLE_SUFFIXES = {".csv", ".tsv", ".parquet", ".jsonl", ".ndjson", ".json", ".txt", ".tar"}
_WDS_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")

_INT_RE = re.compile(r"^[+-]?(0|[1-9]\d*)$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+)$")
_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}")


class ManifestError(ClipseekError):
    """A manifest that cannot be read at all (the message names the file and what to do)."""


class BadRow(Exception):
    """One unusable row; ``column`` names the column at fault, when one is."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


@dataclass(frozen=True)
class Columns:
    """Column names given by the user (``--image-column`` ...); None: detect from the defaults."""

    image: str | None = None
    caption: str | None = None
    id: str | None = None

    def given(self) -> bool:
        return any((self.image, self.caption, self.id))


# ------------------------------------------------------------------------------ values


def text_value(s: str) -> Any:
    """A text cell typed: integers and decimals become numbers, timestamps ISO-8601; None if empty.

    Integers with leading zeros ("007") stay text: they are codes, not quantities."""
    s = s.strip()
    if not s:
        return None
    if _INT_RE.match(s):
        return int(s)
    if _FLOAT_RE.match(s):
        f = float(s)
        return f if math.isfinite(f) else s
    return _iso_time(s)


def _iso_time(s: str) -> str:
    if _TIME_RE.match(s):
        try:
            return datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s).isoformat()
        except ValueError:
            return s
    return s


def typed_value(v: Any) -> Any:
    """A structured value (JSON, Arrow) as stored metadata; None drops the field.

    Bytes are dropped (they are no metadata); NaN is a missing value."""
    if v is None or isinstance(v, (bytes, bytearray)):
        return None
    if isinstance(v, bool) or isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, (datetime, date, time)):
        return v.isoformat()
    if isinstance(v, str):
        return _iso_time(v) if v else None
    if isinstance(v, (list, tuple)):
        return [x for x in (typed_value(i) for i in v) if x is not None]
    if isinstance(v, dict):
        return {str(k): x for k, x in ((k, typed_value(i)) for k, i in v.items()) if x is not None}
    return str(v)


def _meta_hash(meta: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ rows -> refs


def _pick(names: Iterable[str], wanted: str | None, defaults: tuple[str, ...], what: str, file: str) -> str | None:
    names = list(names)
    if wanted is not None:
        if wanted not in names:
            raise ManifestError(
                f"{file}: no column {wanted!r} for the {what} (columns: {', '.join(map(str, names)) or 'none'})"
            )
        return wanted
    lower = {str(n).lower(): n for n in names}
    return next((lower[d] for d in defaults if d in lower), None)


class RowMapper:
    """Turns the rows of one manifest into refs; the column names are fixed when it is made."""

    def __init__(self, file: str, base: Path, names: Iterable[str], columns: Columns, *, text_cells: bool) -> None:
        names = list(names)
        self.file = file
        self.base = base
        self.text_cells = text_cells
        image = _pick(names, columns.image, IMAGE_COLUMNS, "image", file)
        if image is None:
            raise ManifestError(
                f"{file}: no image column (looked for {', '.join(IMAGE_COLUMNS)}; columns: "
                f"{', '.join(map(str, names)) or 'none'}); name it with --image-column"
            )
        self.image = image
        self.caption = _pick(names, columns.caption, CAPTION_COLUMNS, "caption", file)
        self.id = _pick(names, columns.id, ID_COLUMNS, "id", file)
        self.id_named = columns.id is not None

    def _value(self, v: Any) -> Any:
        return text_value(v) if self.text_cells and isinstance(v, str) else typed_value(v)

    def id_of(self, row: dict[str, Any], fallback_id: str) -> str:
        """The row's id, without touching the file system (the duplicate check's second pass).

        Without an id (no id column, or an empty cell of a detected one) it is the path or URL;
        rows whose image is bytes get ``fallback_id`` (file and row)."""
        if self.id is not None:
            v = row.get(self.id)
            if v is not None and str(v).strip() != "":
                return str(v).strip()
            if self.id_named:  # the user said where ids are: a row without one is bad
                raise BadRow(f"empty id in column {self.id!r}", self.id)
        v = row.get(self.image)
        if isinstance(v, (bytes, bytearray)) or (isinstance(v, dict) and v.get("bytes")):
            return fallback_id
        if isinstance(v, dict):  # a Hugging Face Image feature stored as a path
            v = v.get("path")
        if not isinstance(v, str) or not v.strip():
            raise BadRow(f"no image path or URL in column {self.image!r}", self.image)
        v = v.strip()
        return v if _is_url(v) else str(self._path(v))

    def _path(self, v: str) -> Path:
        return (self.base / Path(v).expanduser()).resolve()

    def ref(self, row: dict[str, Any], fallback_id: str) -> ImageRef:
        meta: dict[str, Any] = {}
        for k, v in row.items():
            if k is None:  # csv.DictReader puts surplus cells under None
                raise BadRow(f"the row has {len(row) - 1 + len(v)} cells, the header {len(row) - 1}")
            if k in (self.image, self.id, self.caption):
                continue
            t = self._value(v)
            if t is not None:
                meta[str(k)] = t
        if self.caption is not None:
            cap = row.get(self.caption)
            if cap is not None and not isinstance(cap, str):
                raise BadRow(f"caption is not text ({type(cap).__name__})", self.caption)
            if cap and cap.strip():
                meta["caption"] = cap.strip()
        v = row.get(self.image)
        data: bytes | None = None
        if isinstance(v, dict):  # Hugging Face Image feature
            data = v.get("bytes") or None
            v = v.get("path") if data is None else None
        elif isinstance(v, (bytes, bytearray)):
            data, v = bytes(v), None
        rid = self.id_of(row, fallback_id)
        if data is not None:
            return ImageRef(id=rid, data=data, metadata=meta, fingerprint="sha256:" + _sha(data, meta))
        if v is None or (isinstance(v, str) and not v.strip()):
            raise BadRow(f"no image path or URL in column {self.image!r}", self.image)
        if not isinstance(v, str):
            raise BadRow(f"image value in column {self.image!r} is a {type(v).__name__}, not a path or URL", self.image)
        v = v.strip()
        if _is_url(v):
            meta["url"] = v
            return ImageRef(id=rid, url=v, metadata=meta, fingerprint="url:" + _sha(v.encode(), meta))
        p = self._path(v)
        meta["path"] = str(p)
        meta["file_name"] = p.name
        try:
            st = p.stat()
        except OSError:
            return ImageRef(id=rid, path=p, metadata=meta)  # the loader reports why
        return ImageRef(id=rid, path=p, metadata=meta, fingerprint=f"{st.st_size}:{st.st_mtime_ns}:{_meta_hash(meta)}")


def _sha(data: bytes, meta: dict[str, Any]) -> str:
    return hashlib.sha256(data + _meta_hash(meta).encode()).hexdigest()[:32]


def _is_url(v: str) -> bool:
    return v.startswith(("http://", "https://"))


# ------------------------------------------------------------------------------ the source


class ManifestSource:
    """Rows of one manifest file as refs (see the module docstring). Subclasses read a format."""

    text_cells = False

    def __init__(self, path: str | Path, columns: Columns = Columns()) -> None:
        self.path = Path(path).expanduser()
        self.file = str(path)
        self.columns = columns
        self.base = self.path.resolve().parent
        self.problems: list[Failure] = []
        self.duplicates: list[tuple[str, list[int]]] = []
        self._second_pass = False
        self.mapper = RowMapper(self.file, self.base, self._names(), columns, text_cells=self.text_cells)

    # what a format provides
    def _names(self) -> list[str]:
        raise NotImplementedError

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(1-based row number, row) for every row; a row that cannot be parsed raises BadRow
        through :meth:`_bad` and the iteration goes on."""
        raise NotImplementedError

    def count(self) -> int | None:
        """How many rows, when the format tells cheaply; None when unknown."""
        return None

    def _fallback_id(self, rowno: int) -> str:
        return f"{self.path.resolve()}#{rowno}"

    def _bad(self, rowno: int, message: str, column: str | None = None) -> None:
        if self._second_pass:
            return  # reported on the first pass already
        where = f"{self.file}: row {rowno}" + (f", column {column!r}" if column else "")
        self.problems.append(Failure(f"{self.file}:{rowno}", f"{where}: {message}", "bad_row", self.file))

    def __iter__(self) -> Iterator[ImageRef]:
        self.problems = []
        hashes = array("q")
        for rowno, row in self.rows():
            try:
                ref = self.mapper.ref(row, self._fallback_id(rowno))
            except BadRow as e:
                self._bad(rowno, str(e), e.column)
                continue
            hashes.append(hash(ref.id))
            yield ref
        self.duplicates = self._find_duplicates(hashes)

    def _find_duplicates(self, hashes: array) -> list[tuple[str, list[int]]]:
        import numpy as np

        h = np.frombuffer(hashes, dtype=np.int64) if len(hashes) else np.zeros(0, np.int64)
        uniq, counts = np.unique(h, return_counts=True)
        again = set(uniq[counts > 1].tolist())
        if not again:
            return []
        rows: dict[str, list[int]] = {}
        self._second_pass = True
        try:
            for rowno, row in self.rows():  # a second pass, only when some id hash repeats
                try:
                    rid = self.mapper.id_of(row, self._fallback_id(rowno))
                except BadRow:
                    continue
                if hash(rid) in again:
                    rows.setdefault(rid, []).append(rowno)
        finally:
            self._second_pass = False
        return [(rid, r) for rid, r in rows.items() if len(r) > 1]


def _open_text(path: Path, file: str) -> IO[str]:
    try:
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as e:
        raise ManifestError(f"{file}: cannot read the manifest ({e.strerror or e})") from None


def _count_lines(path: Path) -> int:
    n, last = 0, b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


class CsvSource(ManifestSource):
    """CSV (or TSV for ``.tsv``) with a header row; text cells are typed (see :func:`text_value`)."""

    text_cells = True

    def _reader(self, f: IO[str]) -> csv.DictReader[str]:
        return csv.DictReader(f, delimiter="\t" if self.path.suffix.lower() == ".tsv" else ",")

    def _names(self) -> list[str]:
        with _open_text(self.path, self.file) as f:
            try:
                names = self._reader(f).fieldnames
            except (csv.Error, UnicodeDecodeError) as e:
                raise ManifestError(f"{self.file}: not a readable CSV file ({e})") from None
        if not names:
            raise ManifestError(f"{self.file}: empty manifest (no header row)")
        return list(names)

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with _open_text(self.path, self.file) as f:
            reader = self._reader(f)
            rowno = 0
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except (csv.Error, UnicodeDecodeError) as e:
                    self._bad(rowno + 1, f"cannot parse the CSV ({e}); the rest of the file is not read")
                    return
                rowno += 1
                yield rowno, row

    def count(self) -> int | None:
        return max(0, _count_lines(self.path) - 1)


class JsonLinesSource(ManifestSource):
    """One JSON object per line; the columns are detected from the first 100 objects."""

    def _objects(self) -> Iterator[tuple[int, Any]]:
        with _open_text(self.path, self.file) as f:
            yield from _json_lines(f, self.file)

    def _names(self) -> list[str]:
        """The keys of the first 100 objects (rows may leave out keys they have no value for)."""
        names: dict[str, None] = {}
        seen = 0
        for _, obj in self._objects():
            if isinstance(obj, dict):
                names.update(dict.fromkeys(obj))
                seen += 1
                if seen == 100:
                    break
        if not seen:
            raise ManifestError(f"{self.file}: no JSON object in the manifest")
        return list(names)

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for rowno, obj in self._objects():
            if isinstance(obj, BadRow):
                self._bad(rowno, str(obj))
            elif not isinstance(obj, dict):
                self._bad(rowno, f"not a JSON object ({type(obj).__name__})")
            else:
                yield rowno, obj

    def count(self) -> int | None:
        return _count_lines(self.path)


def _json_lines(f: Iterable[str], file: str) -> Iterator[tuple[int, Any]]:
    rowno = 0
    try:
        for line in f:
            if not line.strip():
                continue
            rowno += 1
            try:
                yield rowno, json.loads(line)
            except ValueError as e:
                yield rowno, BadRow(f"not valid JSON ({e})")
    except UnicodeDecodeError as e:
        raise ManifestError(f"{file}: row {rowno + 1}: not UTF-8 text ({e})") from None


class JsonArraySource(JsonLinesSource):
    """A JSON array of objects, parsed one object at a time (never the whole document)."""

    def _objects(self) -> Iterator[tuple[int, Any]]:
        with _open_text(self.path, self.file) as f:
            yield from _json_array(f, self.file)

    def count(self) -> int | None:
        return None


def _json_array(f: IO[str], file: str, chunk: int = 1 << 16) -> Iterator[tuple[int, Any]]:
    """The elements of a JSON array, decoded one at a time from ``chunk``-sized reads.

    Text that is not valid JSON ends the file (the rest cannot be told apart): it is yielded as
    a BadRow, so the rows before it are still indexed."""
    dec = json.JSONDecoder()
    buf, pos, eof = "", 0, False

    def more() -> bool:
        nonlocal buf, pos, eof
        data = "" if eof else f.read(chunk)
        if not data:
            eof = True
            return False
        buf, pos = buf[pos:] + data, 0
        return True

    def peek() -> str:
        """The next character that is not white space ("" at the end of the file)."""
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos].isspace():
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not more():
                return ""

    try:
        if peek() != "[":
            raise ManifestError(f"{file}: not a JSON array of objects (use .jsonl for one object per line)")
        pos += 1
        rowno = 0
        while True:
            c = peek()
            if c == "]":
                return
            if rowno:
                if c != ",":
                    yield rowno + 1, BadRow(f"expected ',' or ']' at {c!r}; the rest of the file is not read")
                    return
                pos += 1
                c = peek()
            if not c:
                yield rowno + 1, BadRow("the JSON array is not closed (truncated file?)")
                return
            while True:
                try:
                    obj, end = dec.raw_decode(buf, pos)
                except ValueError as e:
                    if more():
                        continue
                    yield rowno + 1, BadRow(f"not valid JSON ({e}); the rest of the file is not read")
                    return
                if end == len(buf) and more():  # a number may go on in the next chunk
                    continue
                break
            rowno += 1
            pos = end
            yield rowno, obj
    except UnicodeDecodeError as e:
        raise ManifestError(f"{file}: not UTF-8 text ({e})") from None


class ListSource(ManifestSource):
    """One path or URL per line (blank lines and '#' comments skipped); ``-`` reads stdin."""

    def __init__(self, path: str | Path, columns: Columns = Columns(), stream: Iterable[str] | None = None) -> None:
        self.stream = stream
        super().__init__(path, columns)
        if stream is not None:
            self.base = Path.cwd()
            self.mapper.base = self.base

    def _names(self) -> list[str]:
        if self.columns.given():
            raise ManifestError(f"{self.file}: a plain list has no columns; --image/--caption/--id-column need a table")
        return ["image"]

    def _lines(self) -> Iterator[str]:
        if self.stream is not None:
            yield from self.stream
            return
        with _open_text(self.path, self.file) as f:
            try:
                yield from f
            except UnicodeDecodeError as e:
                raise ManifestError(f"{self.file}: not UTF-8 text ({e})") from None

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        rowno = 0
        for line in self._lines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            rowno += 1
            yield rowno, {"image": line}

    def count(self) -> int | None:
        return None if self.stream is not None else _count_lines(self.path)


class ParquetSource(ManifestSource):
    """A Parquet file, read one record batch at a time (row group by row group)."""

    batch_rows = 2048

    def _file(self) -> Any:
        pq = _pyarrow_parquet()
        try:
            return pq.ParquetFile(self.path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise ManifestError(f"{self.file}: not a readable Parquet file ({e})") from None

    def _names(self) -> list[str]:
        return list(self._file().schema_arrow.names)

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        rowno = 0
        for batch in self._file().iter_batches(batch_size=self.batch_rows):
            for row in batch.to_pylist():
                rowno += 1
                yield rowno, row

    def count(self) -> int | None:
        return int(self._file().metadata.num_rows)


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise ManifestError("reading Parquet files needs pyarrow: pip install 'clipseek[manifest]'") from None
    return pq


class HfDatasetSource(ManifestSource):
    """A Hugging Face dataset saved with ``save_to_disk`` (one split): its Arrow stream files, in
    the order ``state.json`` lists them. ``Image`` features give bytes or paths."""

    def __init__(self, path: str | Path, columns: Columns = Columns(), split: str | None = None) -> None:
        self.split = split
        super().__init__(path, columns)
        self.base = self.path.resolve()
        self.mapper.base = self.base

    def _files(self) -> list[Path]:
        state = self.path / "state.json"
        try:
            files = [self.path / d["filename"] for d in json.loads(state.read_text())["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ManifestError(f"{state}: not a Hugging Face dataset state file ({e})") from None
        return files

    def _stream(self, file: Path) -> Any:
        import pyarrow as pa  # type: ignore[import-untyped]

        try:
            return pa.ipc.open_stream(pa.memory_map(str(file)))
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise ManifestError(f"{file}: not a readable Arrow file ({e})") from None

    def _names(self) -> list[str]:
        _pyarrow_parquet()
        files = self._files()
        if not files:
            raise ManifestError(f"{self.file}: the dataset has no data files")
        return list(self._stream(files[0]).schema.names)

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        rowno = 0
        for file in self._files():
            for batch in self._stream(file):
                for row in batch.to_pylist():
                    rowno += 1
                    if self.split is not None:
                        row.setdefault("split", self.split)
                    yield rowno, row

    def count(self) -> int | None:
        return sum(self._stream(f).read_all().num_rows for f in self._files())  # memory-mapped: no copy


class ChainSource:
    """Several sources one after the other (the splits of a DatasetDict, the shards of a folder)."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        self.problems: list[Failure] = []
        self.duplicates: list[tuple[str, list[int]]] = []

    def __iter__(self) -> Iterator[ImageRef]:
        for p in self.parts:
            yield from p
            self.problems.extend(p.problems)
            self.duplicates.extend(getattr(p, "duplicates", []))

    def count(self) -> int | None:
        counts = [p.count() for p in self.parts]
        return None if any(c is None for c in counts) else sum(counts)


class WebDatasetSource:
    """WebDataset ``.tar`` shards: members sharing a key (the name up to the first dot) make one
    item: the image (jpg, png ...) and optionally ``.json`` metadata and ``.txt`` caption. Read as a
    stream, one item at a time. The id is the json's ``id`` (or the id column), else
    ``<shard path>/<key>``."""

    def __init__(self, shards: list[Path], columns: Columns = Columns()) -> None:
        self.shards = shards
        self.columns = columns
        self.problems: list[Failure] = []
        self.duplicates: list[tuple[str, list[int]]] = []

    def count(self) -> int | None:
        return None

    def __iter__(self) -> Iterator[ImageRef]:
        for shard in self.shards:
            yield from self._shard(shard)

    def _shard(self, shard: Path) -> Iterator[ImageRef]:
        file = str(shard)
        try:
            tar = tarfile.open(shard, mode="r|*")
        except (OSError, tarfile.TarError) as e:
            raise ManifestError(f"{file}: not a readable tar shard ({e})") from None
        st = shard.stat()
        with tar:
            key, parts = None, {}
            try:
                for m in tar:
                    if not m.isfile():
                        continue
                    base = m.name.rsplit("/", 1)[-1]
                    if "." not in base or base.startswith("."):
                        continue
                    k = m.name[: len(m.name) - len(base)] + base.split(".", 1)[0]
                    ext = base.split(".", 1)[1].lower()
                    if k != key and key is not None:
                        yield from self._item(shard, st, key, parts)
                        parts = {}
                    key = k
                    f = tar.extractfile(m)
                    parts[ext] = f.read() if f is not None else b""
            except (OSError, tarfile.TarError) as e:
                self.problems.append(Failure(file, f"{file}: shard cut short after {key!r} ({e})", "bad_row", file))
            if key is not None:
                yield from self._item(shard, st, key, parts)

    def _item(self, shard: Path, st: Any, key: str, parts: dict[str, bytes]) -> Iterator[ImageRef]:
        file = str(shard)
        where = f"{file}: item {key!r}"
        item = f"{shard.resolve()}/{key}"
        meta: dict[str, Any] = {}
        if "json" in parts:
            try:
                obj = json.loads(parts["json"])
            except ValueError as e:
                self.problems.append(Failure(item, f"{where}: bad JSON member ({e})", "bad_row", file))
                return
            if isinstance(obj, dict):
                meta.update({str(k): t for k, t in ((k, typed_value(v)) for k, v in obj.items()) if t is not None})
        if "txt" in parts:
            meta["caption"] = codecs.decode(parts["txt"], "utf-8", "replace").strip()
        elif self.columns.caption and self.columns.caption in meta:
            meta["caption"] = str(meta.pop(self.columns.caption))
        elif "caption" not in meta and "text" in meta:
            meta["caption"] = str(meta.pop("text"))
        image = next((parts[e] for e in _WDS_IMAGE_EXTS if e in parts), None)
        if image is None:
            self.problems.append(Failure(item, f"{where}: no image member (.jpg, .png ...)", "bad_row", file))
            return
        id_col = self.columns.id or "id"
        rid = str(meta.pop(id_col)) if meta.get(id_col) not in (None, "") else item
        meta["shard"] = shard.name
        meta["key"] = key
        yield ImageRef(id=rid, data=image, metadata=meta, fingerprint=f"tar:{st.st_size}:{st.st_mtime_ns}:{_sha(image, meta)}")


# ------------------------------------------------------------------------------ choosing a reader


def manifest_source(target: str | Path, columns: Columns = Columns()) -> Any | None:
    """The manifest source for a path, or None when it is no manifest (a folder of images, an image)."""
    if str(target) == "-":
        return _stdin_source(columns)
    p = Path(target).expanduser()
    if p.is_dir():
        if (p / "dataset_dict.json").is_file():
            try:
                splits = json.loads((p / "dataset_dict.json").read_text())["splits"]
            except (OSError, ValueError, KeyError) as e:
                raise ManifestError(f"{p / 'dataset_dict.json'}: not a Hugging Face dataset dict ({e})") from None
            return ChainSource([HfDatasetSource(p / s, columns, split=s) for s in splits])
        if (p / "state.json").is_file() and (p / "dataset_info.json").is_file():
            return HfDatasetSource(p, columns)
        shards = sorted(c for c in p.iterdir() if c.suffix.lower() == ".tar" and c.is_file())
        images = any(c.is_file() and c.suffix.lower() in {"." + e for e in _WDS_IMAGE_EXTS} for c in p.iterdir())
        if shards and not images:
            return WebDatasetSource(shards, columns)
        return None
    suffix = p.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        return None
    if not p.exists():
        raise ManifestError(f"{target}: no such file")
    if suffix == ".tar":
        return WebDatasetSource([p], columns)
    cls = {
        ".csv": CsvSource,
        ".tsv": CsvSource,
        ".parquet": ParquetSource,
        ".jsonl": JsonLinesSource,
        ".ndjson": JsonLinesSource,
        ".json": JsonArraySource,
        ".txt": ListSource,
    }[suffix]
    return cls(p, columns)


class _StdinJsonLines(JsonLinesSource):
    """JSON Lines from stdin (read once: the first line, read to detect the format, is kept)."""

    def __init__(self, first: str, rest: Iterator[str], columns: Columns) -> None:
        self._lines = _prepend(first, rest)
        self._first = first
        super().__init__("-", columns)
        self.base = Path.cwd()
        self.mapper.base = self.base

    def _names(self) -> list[str]:
        try:
            obj = json.loads(self._first)
        except ValueError as e:
            raise ManifestError(f"stdin: the first line is not valid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise ManifestError("stdin: the first line is not a JSON object")
        return list(obj)

    def _objects(self) -> Iterator[tuple[int, Any]]:
        yield from _json_lines(self._lines, self.file)

    def count(self) -> int | None:
        return None


def _stdin_source(columns: Columns) -> Any:
    lines = iter(sys.stdin)
    first = ""
    for line in lines:
        if line.strip():
            first = line
            break
    if first.lstrip().startswith("{"):
        return _StdinJsonLines(first, lines, columns)
    return ListSource("-", columns, stream=_prepend(first, lines))


def _prepend(first: str, rest: Iterator[str]) -> Iterator[str]:
    if first:
        yield first
    yield from rest
