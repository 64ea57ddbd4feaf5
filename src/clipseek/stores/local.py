"""The embedded default store: SQLite (source of truth) + an mmap'd vector file + an hnswlib index.

Layout of the directory the store owns::

    store.sqlite     records(slot, id, metadata JSON), atoms(field, slot, k, s, n, t),
                     field_counts(field, n), meta(key, value); WAL mode
    vectors.f32      float32 rows, row ``slot`` at byte ``slot * dim * 4`` (append-only by slot)
    hnsw.bin         the hnswlib graph; a derived cache, never the source of truth
    LOCK             an exclusive ``flock`` so two processes never write one store

Readers
    ``read_only=True`` takes no lock, so any number of readers (``clipseek search`` in another
    terminal) work while one writer indexes. A reader sees the records committed when it opened
    (one SQLite read transaction, and the vector file already covers every committed slot), keeps
    any index catch-up in memory, and refuses writes.

Durability and atomicity
    Every record lives in a *slot*: an integer that is never reused (it is also the record's hnswlib
    label). An upsert of an existing id retires the old slot and takes a new one, so a slot's vector
    never changes once written. One ``upsert``/``delete`` call is one SQLite transaction; the
    vectors of an upsert are written to ``vectors.f32`` and ``fdatasync``-ed *before* that
    transaction commits (while holding SQLite's write lock), so a committed row always has its
    vector on disk and a killed process leaves either all of a call's records or none. Bytes past
    the last committed slot (from a call that died before committing) are garbage that the next
    upsert overwrites.

The hnswlib index
    Saved atomically (temporary file, fsync, ``os.replace``) on :meth:`flush`/:meth:`close`, loaded
    lazily on the first search that needs it. Whatever state the file is in (missing, older than
    SQLite, unreadable) the store catches up on load: it adds the live slots the index lacks and
    ``mark_deleted``-s the labels SQLite no longer has, or rebuilds from SQLite + vectors.

Search
    An exact numpy scan when the collection holds fewer than ``exact_below`` records, or when a
    filter keeps at most ``max(exact_below, filtered_exact_fraction * n)`` records (so selective
    filters are always exact); otherwise HNSW, with the filter applied *inside* the graph search
    (hnswlib's ``filter=`` on a label mask) and a raised ``ef``. If the filtered graph search comes
    back with fewer hits than it should, the store falls back to the exact filtered scan.
    Cosines are recomputed from the stored vectors, and hits are ordered by cosine descending,
    then id ascending.

Filters
    Each scalar of each metadata value is reduced by :func:`clipseek.filters.atom` to an atom
    ``(s, n, t)`` stored in ``atoms``; a field's atoms are loaded into numpy columns on first use
    and kept up to date, and a filter is evaluated to a boolean mask over slots -- with exactly the
    semantics of :func:`clipseek.filters.matches`.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import sqlite3
import struct
import threading
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import filters
from ..errors import BadVector, ClipseekError
from ..filters import Atom, Condition
from ..types import Hit, Record, as_unit_vectors
from .base import VectorStore

try:  # POSIX only; elsewhere the store simply does not guard against a second process
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

FORMAT_VERSION = "1"
DB_FILE = "store.sqlite"
VEC_FILE = "vectors.f32"
HNSW_FILE = "hnsw.bin"
LOCK_FILE = "LOCK"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records(
    slot INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    metadata TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS atoms(
    field TEXT NOT NULL,
    slot INTEGER NOT NULL,
    k INTEGER NOT NULL,
    s TEXT,
    n REAL,
    t REAL,
    PRIMARY KEY(field, slot, k)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS field_counts(field TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
"""

# hnswlib's file header: offsetLevel0, max_elements, cur_element_count, size_data_per_element,
# label_offset, offsetData, maxlevel, enterpoint_node, maxM, maxM0, M, mult, ef_construction
_HNSW_HEADER = struct.Struct("<QQQQQQiIQQQdQ")


def _json_default(v: Any) -> Any:
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, (set, frozenset)):
        return sorted(v, key=repr)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"metadata value {v!r} of type {type(v).__name__} cannot be stored as JSON")


class _AtomCache:
    """filters.atom for strings is the costly part of an upsert (number and ISO-time parsing);
    metadata strings repeat a lot (camera names, labels), so remember recent ones."""

    def __init__(self, size: int = 200_000) -> None:
        self.size = size
        self.d: dict[str, Atom | None] = {}

    def atoms(self, value: Any) -> list[Atom]:
        items = value if isinstance(value, (list, tuple)) else (value,)
        out: list[Atom] = []
        for it in items:
            if isinstance(it, str):
                if it in self.d:
                    a = self.d[it]
                else:
                    a = filters.atom(it)
                    if len(self.d) >= self.size:
                        self.d.clear()
                    self.d[it] = a
            else:
                a = filters.atom(it)
            if a is not None:
                out.append(a)
        return out


class _Column:
    """The atoms of one field as numpy arrays: slot, string code, number, time (NaN = none)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.slot = np.zeros(0, np.int64)
        self.code = np.zeros(0, np.int32)
        self.num = np.zeros(0, np.float64)
        self.time = np.zeros(0, np.float64)
        self.pending: list[tuple[np.ndarray, ...]] = []

    def add(self, rows: Sequence[tuple[int, str | None, float | None, float | None]]) -> None:
        if not rows:
            return
        codes = self.codes
        slot = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        code = np.fromiter(
            (-1 if r[1] is None else codes.setdefault(r[1], len(codes)) for r in rows), np.int32, len(rows)
        )
        num = np.fromiter((math.nan if r[2] is None else r[2] for r in rows), np.float64, len(rows))
        tim = np.fromiter((math.nan if r[3] is None else r[3] for r in rows), np.float64, len(rows))
        self.pending.append((slot, code, num, tim))

    def arrays(self, live: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self.pending:
            parts = [(self.slot, self.code, self.num, self.time), *self.pending]
            self.slot, self.code, self.num, self.time = (np.concatenate(p) for p in zip(*parts))
            self.pending = []
            alive = live[self.slot]
            if len(alive) > 1024 and alive.mean() < 0.5:  # mostly atoms of retired slots: compact
                self.slot, self.code, self.num, self.time = (
                    a[alive] for a in (self.slot, self.code, self.num, self.time)
                )
        return self.slot, self.code, self.num, self.time


class LocalStore(VectorStore):
    """SQLite + mmap'd vectors + hnswlib; see the module docstring.

    Options: ``exact_below`` (collections smaller than this are searched exactly; 0 forces HNSW),
    ``filtered_exact_fraction`` (filters keeping at most ``max(exact_below, fraction * n)`` records
    are searched exactly), ``ef_search``, ``M``, ``ef_construction``, ``threads`` (for index builds).
    """

    name = "local"
    persistent = True

    def __init__(
        self,
        path: Path | str | None,
        dim: int,
        *,
        exact_below: int = 20_000,
        filtered_exact_fraction: float = 0.02,
        ef_search: int = 256,
        M: int = 16,
        ef_construction: int = 128,
        threads: int = -1,
        read_only: bool = False,
        **options: Any,
    ) -> None:
        if path is None:
            raise ClipseekError("the local store needs a directory (path=None given); use the memory store")
        if int(dim) <= 0:
            raise BadVector(f"dimension must be positive, got {dim}")
        super().__init__(Path(path), int(dim))
        self.path: Path = Path(path)
        self.exact_below = int(exact_below)
        self.filtered_exact_fraction = float(filtered_exact_fraction)
        self.ef_search = int(ef_search)
        self.M = int(M)
        self.ef_construction = int(ef_construction)
        self.threads = int(threads)
        self._row_bytes = self.dim * 4
        self._closed = False
        self.read_only = bool(read_only)

        if self.read_only:
            # A reader takes no lock, so it can search while one writer (another process) indexes:
            # it sees the records committed when it opened (SQLite WAL readers never block the
            # writer, and vectors are on disk before the rows that point at them commit).
            if not (self.path / DB_FILE).is_file():
                raise ClipseekError(f"no local store at {self.path}")
            self._lock_fd = None
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_fd = self._take_lock()
        self._wlock = threading.RLock()  # writes, the writer connection, in-memory state changes
        self._ilock = threading.RLock()  # the hnswlib index
        self._clock = threading.Lock()  # filter columns
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        try:
            self._db = self._connect()
            if self.read_only:
                self._db.execute("BEGIN")  # one consistent snapshot for the whole open
                self._init_meta()
                self._load_state()
                self._open_vectors()  # after the rows: the file already covers every committed slot
                self._db.execute("COMMIT")
                self._check_vectors_cover_records()
            else:
                self._db.executescript(_SCHEMA)
                self._init_meta()
                self._open_vectors()
                self._load_state()
                self._check_vectors_cover_records()
        except BaseException:
            self._release()
            raise

        self._atom_cache = _AtomCache()
        self._columns: dict[str, _Column] = {}
        self._index: Any = None  # hnswlib.Index once loaded/built
        self._index_dirty = False

    # ------------------------------------------------------------------------------ opening

    def _take_lock(self) -> int | None:
        if fcntl is None:
            return None
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ClipseekError(
                f"the store at {self.path} is already open (in this or another process); close it first"
            ) from None
        return fd

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path / DB_FILE, isolation_level=None, check_same_thread=False, timeout=30.0)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA busy_timeout=30000")
        return con

    def _init_meta(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not meta and self.read_only:
            raise ClipseekError(f"the local store at {self.path} was never written to")
        if not meta:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                [("format", FORMAT_VERSION), ("dim", str(self.dim)), ("next_slot", "0")],
            )
            self._db.execute("COMMIT")
            return
        if meta.get("format") != FORMAT_VERSION:
            raise ClipseekError(f"{self.path}: unsupported local store format {meta.get('format')!r}")
        stored = int(meta["dim"])
        if stored != self.dim:
            raise BadVector(
                f"the store at {self.path} holds {stored}-d vectors; it cannot be opened for {self.dim}-d vectors"
            )

    def _open_vectors(self) -> None:
        flags = os.O_RDONLY if self.read_only else os.O_RDWR | os.O_CREAT
        self._vfd: int = os.open(self.path / VEC_FILE, flags, 0o644)
        self._vrows = 0
        self._vmap: mmap.mmap | None = None
        self._V = np.zeros((0, self.dim), np.float32)
        self._map_vectors(os.fstat(self._vfd).st_size // self._row_bytes)

    def _map_vectors(self, rows: int) -> None:
        """(Re)map the first ``rows`` rows of the vector file (which must already be that long).
        Arrays handed out earlier keep their old mapping alive until they are dropped."""
        if rows <= 0:
            return
        mm = mmap.mmap(self._vfd, rows * self._row_bytes, access=mmap.ACCESS_READ)
        self._vmap = mm
        self._V = np.frombuffer(mm, dtype=np.float32).reshape(rows, self.dim)
        self._vrows = rows

    def _load_state(self) -> None:
        self._next = int(self._db.execute("SELECT value FROM meta WHERE key='next_slot'").fetchone()[0])
        slots = np.array([r[0] for r in self._db.execute("SELECT slot FROM records")], dtype=np.int64)
        self._max_slot = int(slots.max()) if len(slots) else -1
        live = np.zeros(max(self._next, 1024), dtype=bool)
        live[slots] = True
        self._live = live
        self._n = len(slots)
        self._field_counts: dict[str, int] = dict(self._db.execute("SELECT field, n FROM field_counts"))

    def _check_vectors_cover_records(self) -> None:
        if self._max_slot >= self._vrows:
            raise ClipseekError(
                f"{self.path}: {VEC_FILE} is shorter than the records need (the file was truncated or replaced)"
            )
        if self._vrows > len(self._live):
            self._grow_live(self._vrows)

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise ClipseekError(f"the store at {self.path} is open read-only")

    # ------------------------------------------------------------------------------ helpers

    def _check_open(self) -> None:
        if self._closed:
            raise ClipseekError(f"the store at {self.path} is closed")

    def _reader(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._connect()
            self._local.con = con
            with self._wlock:
                self._readers.append(con)
        return con

    def _ensure_rows(self, rows: int) -> None:
        """Make the vector file and its mapping cover ``rows`` rows."""
        if rows <= self._vrows:
            return
        new = max(rows, int(self._vrows * 1.25), self._vrows + max(1, (1 << 20) // self._row_bytes))
        if os.fstat(self._vfd).st_size < new * self._row_bytes:
            os.ftruncate(self._vfd, new * self._row_bytes)
        self._map_vectors(new)

    def _grow_live(self, rows: int) -> None:
        if rows > len(self._live):
            live = np.zeros(max(rows, int(len(self._live) * 1.5)), dtype=bool)
            live[: len(self._live)] = self._live
            self._live = live

    def _sync_file(self) -> None:
        if hasattr(os, "fdatasync"):
            os.fdatasync(self._vfd)
        else:  # pragma: no cover
            os.fsync(self._vfd)

    def _lookup(self, con: sqlite3.Connection, ids: Sequence[str]) -> list[tuple[str, int, str]]:
        """(id, slot, metadata JSON) of the known ids among ``ids``."""
        if not ids:
            return []
        return con.execute(
            "SELECT id, slot, metadata FROM records WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),),
        ).fetchall()

    def _by_slot(self, slots: Iterable[int]) -> dict[int, tuple[str, str]]:
        slots = [int(s) for s in slots]
        if not slots:
            return {}
        rows = self._reader().execute(
            "SELECT slot, id, metadata FROM records WHERE slot IN (SELECT value FROM json_each(?))",
            (json.dumps(slots),),
        )
        return {s: (i, m) for s, i, m in rows}

    # ------------------------------------------------------------------------------ writes

    def upsert(self, records: Sequence[Record]) -> None:
        self._check_writable()
        if not records:
            return
        last: dict[str, Record] = {}
        for r in records:
            if not isinstance(r.id, str) or not r.id:
                raise ClipseekError(f"record ids must be non-empty strings, got {r.id!r}")
            last.pop(r.id, None)
            last[r.id] = r  # a repeated id: the last one wins
        recs = list(last.values())
        try:
            stacked = np.stack([np.asarray(r.vector, dtype=np.float32) for r in recs])
        except (ValueError, TypeError) as e:
            raise BadVector(f"record vectors must all be {self.dim}-d numeric vectors: {e}") from None
        vecs = as_unit_vectors(stacked, self.dim)
        if vecs.shape[0] != len(recs):
            raise BadVector(f"expected one {self.dim}-d vector per record, got shape {stacked.shape}")
        metas = [json.dumps(r.metadata, default=_json_default, ensure_ascii=False) for r in recs]

        with self._wlock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                start = int(db.execute("SELECT value FROM meta WHERE key='next_slot'").fetchone()[0])
                k = len(recs)
                # 1. vectors, durable before the rows that point at them commit
                self._ensure_rows(start + k)
                os.pwrite(self._vfd, vecs.tobytes(), start * self._row_bytes)
                self._sync_file()
                # 2. retire the old slots of ids that exist already
                old = self._lookup(db, [r.id for r in recs])
                old_slots, delta = self._retire(db, old)
                # 3. the new rows
                slots = range(start, start + k)
                db.executemany(
                    "INSERT INTO records(slot, id, metadata) VALUES (?, ?, ?)",
                    zip(slots, (r.id for r in recs), metas),
                )
                atom_rows = []
                for slot, r in zip(slots, recs):
                    for f, v in r.metadata.items():
                        delta[f] = delta.get(f, 0) + 1
                        for j, a in enumerate(self._atom_cache.atoms(v)):
                            atom_rows.append((f, slot, j, a.s, a.n, a.t))
                db.executemany("INSERT INTO atoms(field, slot, k, s, n, t) VALUES (?, ?, ?, ?, ?, ?)", atom_rows)
                self._apply_counts(db, delta)
                db.execute("UPDATE meta SET value=? WHERE key='next_slot'", (str(start + k),))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            # 4. in-memory state, after the commit
            self._next = start + k
            self._grow_live(self._next)
            if old_slots:
                self._live[old_slots] = False
            self._live[start : start + k] = True
            self._n += k - len(old_slots)
            self._merge_counts(delta)
            self._add_to_columns(atom_rows)
            with self._ilock:
                if self._index is not None:
                    self._index_forget(old_slots)
                    self._index_add(vecs, np.arange(start, start + k))

    def delete(self, ids: Iterable[str]) -> int:
        self._check_writable()
        ids = list(dict.fromkeys(ids))
        if not ids:
            return 0
        with self._wlock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                old = self._lookup(db, ids)
                old_slots, delta = self._retire(db, old)
                self._apply_counts(db, delta)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if old_slots:
                self._live[old_slots] = False
                self._n -= len(old_slots)
                self._merge_counts(delta)
                with self._ilock:
                    if self._index is not None:
                        self._index_forget(old_slots)
            return len(old_slots)

    def _retire(self, db: sqlite3.Connection, old: list[tuple[str, int, str]]) -> tuple[list[int], dict[str, int]]:
        delta: dict[str, int] = {}
        if not old:
            return [], delta
        keys = []
        for _id, slot, meta in old:
            for f in json.loads(meta):
                delta[f] = delta.get(f, 0) - 1
                keys.append((f, slot))
        db.executemany("DELETE FROM atoms WHERE field=? AND slot=?", keys)
        db.executemany("DELETE FROM records WHERE slot=?", [(o[1],) for o in old])
        return [o[1] for o in old], delta

    @staticmethod
    def _apply_counts(db: sqlite3.Connection, delta: dict[str, int]) -> None:
        if not delta:
            return
        db.executemany(
            "INSERT INTO field_counts(field, n) VALUES (?, ?) ON CONFLICT(field) DO UPDATE SET n = n + excluded.n",
            [(f, d) for f, d in delta.items() if d],
        )
        db.execute("DELETE FROM field_counts WHERE n <= 0")

    def _merge_counts(self, delta: dict[str, int]) -> None:
        counts = dict(self._field_counts)
        for f, d in delta.items():
            v = counts.get(f, 0) + d
            if v > 0:
                counts[f] = v
            else:
                counts.pop(f, None)
        self._field_counts = counts

    def _add_to_columns(self, atom_rows: list[tuple[Any, ...]]) -> None:
        if not self._columns or not atom_rows:
            return
        by_field: dict[str, list[tuple[Any, ...]]] = {}
        for f, slot, _j, s, n, t in atom_rows:
            if f in self._columns:
                by_field.setdefault(f, []).append((slot, s, n, t))
        with self._clock:
            for f, rows in by_field.items():
                self._columns[f].add(rows)

    # ------------------------------------------------------------------------------ reads

    def get(self, ids: Sequence[str]) -> list[Record | None]:
        self._check_open()
        ids = list(ids)
        found = {i: (slot, meta) for i, slot, meta in self._lookup(self._reader(), ids)}
        V = self._V
        out: list[Record | None] = []
        for i in ids:
            hit = found.get(i)
            if hit is None:
                out.append(None)
            else:
                out.append(Record(i, np.array(V[hit[0]], dtype=np.float32), json.loads(hit[1])))
        return out

    def count(self, where: Sequence[Condition] = ()) -> int:
        self._check_open()
        if not where:
            return self._n
        return int(self._mask(where).sum())

    def fields(self) -> list[str]:
        self._check_open()
        return sorted(self._field_counts)

    def ids(self, where: Sequence[Condition] = ()) -> list[str]:
        self._check_open()
        if not where:
            return [r[0] for r in self._reader().execute("SELECT id FROM records")]
        slots = np.nonzero(self._mask(where))[0].tolist()
        out: list[str] = []
        for i in range(0, len(slots), 50_000):
            out.extend(
                r[0]
                for r in self._reader().execute(
                    "SELECT id FROM records WHERE slot IN (SELECT value FROM json_each(?))",
                    (json.dumps(slots[i : i + 50_000]),),
                )
            )
        return out

    def fingerprints(self) -> dict[str, str]:
        self._check_open()
        rows = self._reader().execute(
            "SELECT id, json_extract(metadata, '$._fingerprint') FROM records "
            "WHERE json_type(metadata, '$._fingerprint') IS NOT NULL"
        )
        return {i: str(v) for i, v in rows}

    # ------------------------------------------------------------------------------ filters

    def _column(self, field: str) -> _Column:
        col = self._columns.get(field)
        if col is None:
            with self._wlock:  # no upsert may slip between the load and the registration
                col = self._columns.get(field)
                if col is None:
                    col = _Column()
                    col.add(self._db.execute("SELECT slot, s, n, t FROM atoms WHERE field=?", (field,)).fetchall())
                    self._columns[field] = col
        return col

    def _mask(self, where: Sequence[Condition]) -> np.ndarray:
        """Boolean mask over slots of the live records matching every condition."""
        filters.check_fields(where, self._field_counts)
        filters.validate(where)
        live = self._live
        mask = live.copy()
        for c in where:
            col = self._column(c.field)
            with self._clock:
                slot, code, num, tim = col.arrays(live)
                if c.op in ("eq", "in"):
                    targets = filters.eq_targets(c)
                    codes = [col.codes[t.s] for t in targets if t.s is not None and t.s in col.codes]
                    nums = [t.n for t in targets if t.n is not None]
                    sel = np.zeros(len(slot), dtype=bool)
                    if codes:
                        sel |= np.isin(code, codes) if len(codes) > 1 else code == codes[0]
                    if nums:
                        sel |= np.isin(num, nums) if len(nums) > 1 else num == nums[0]
                else:
                    which, bound = filters._range_key(c)
                    x = num if which == "n" else tim
                    with np.errstate(invalid="ignore"):
                        if c.op == "gt":
                            sel = x > bound
                        elif c.op == "gte":
                            sel = x >= bound
                        elif c.op == "lt":
                            sel = x < bound
                        else:
                            sel = x <= bound
                hit_slots = slot[sel]
            cm = np.zeros(len(mask), dtype=bool)
            cm[hit_slots[hit_slots < len(cm)]] = True
            mask &= cm
        return mask

    # ------------------------------------------------------------------------------ search

    def search(
        self,
        vector: np.ndarray,
        limit: int = 10,
        where: Sequence[Condition] = (),
        min_cosine: float | None = None,
        exclude: Iterable[str] = (),
    ) -> list[Hit]:
        self._check_open()
        q = as_unit_vectors(vector, self.dim)
        if q.shape[0] != 1:
            raise BadVector(f"search takes one query vector, got {q.shape[0]}")
        q = q[0]
        where = list(where)
        mask = self._mask(where) if where else None  # raises BadFilter before any other work
        limit = int(limit)
        if limit <= 0 or self._n == 0:
            return []
        live = self._live  # read before _V: a writer remaps _V before it marks new slots live
        excl = exclude if isinstance(exclude, (list, tuple, set, frozenset)) else list(exclude)
        excl_slots = [s for _i, s, _m in self._lookup(self._reader(), list(excl))] if excl else []
        if mask is not None:
            if excl_slots:
                mask[excl_slots] = False
            m = int(mask.sum())
        else:
            m = self._n - len(excl_slots)
        if m <= 0:
            return []

        n = self._n
        exact = n < self.exact_below or (
            mask is not None and m <= max(self.exact_below, self.filtered_exact_fraction * n)
        )
        pairs: list[tuple[int, float]] | None = None
        if not exact:
            pairs = self._search_hnsw(q, limit, mask, m, excl_slots, live, min_cosine)
        if pairs is None:
            if mask is None:
                mask = live.copy()
                if excl_slots:
                    mask[excl_slots] = False
            pairs = self._search_exact(q, mask, limit, min_cosine)
        return self._hits(pairs, limit)

    def _search_exact(
        self, q: np.ndarray, mask: np.ndarray, limit: int, min_cosine: float | None
    ) -> list[tuple[int, float]]:
        V = self._V
        cand = np.nonzero(mask[: len(V)])[0]
        if len(cand) == 0:
            return []
        if len(cand) * 2 > self._next:  # most rows: one pass over the whole (contiguous) matrix
            scores = (V[: int(cand[-1]) + 1] @ q)[cand]
        else:
            scores = V[cand] @ q
        return self._top(cand, scores, limit, min_cosine)

    @staticmethod
    def _top(cand: np.ndarray, scores: np.ndarray, limit: int, min_cosine: float | None) -> list[tuple[int, float]]:
        """Candidates that may make the top ``limit`` (all ties at the cut-off kept)."""
        if min_cosine is not None:
            keep = scores >= min_cosine
            cand, scores = cand[keep], scores[keep]
        if len(cand) > limit:
            part = np.argpartition(-scores, limit - 1)[:limit]
            cut = scores[part].min()
            keep = scores >= cut
            cand, scores = cand[keep], scores[keep]
        return list(zip(cand.tolist(), scores.tolist()))

    def _search_hnsw(
        self,
        q: np.ndarray,
        limit: int,
        mask: np.ndarray | None,
        m: int,
        excl_slots: list[int],
        live: np.ndarray,
        min_cosine: float | None,
    ) -> list[tuple[int, float]] | None:
        """Graph search; None when the caller should fall back to the exact scan."""
        if self._index is None:
            with self._wlock, self._ilock:  # lock order everywhere: _wlock, then _ilock
                self._ensure_index()
        with self._ilock:
            index = self._index
            if index is None:  # closed meanwhile
                return None
            if mask is None:
                k = min(m + len(excl_slots), limit + len(excl_slots) + 2)
                ef = max(self.ef_search, k)
                flt = None
            else:
                k = min(m, limit + 2)
                selectivity = m / max(self._n, 1)
                ef = max(self.ef_search, 4 * limit, k, min(int(limit / selectivity), 1000))
                flt = mask.tobytes().__getitem__
            index.set_ef(ef)
            try:
                labels, _dist = index.knn_query(q, k=k, num_threads=1, filter=flt)
            except RuntimeError:  # fewer than k reachable: let the exact scan answer
                return None
        labels = labels[0].astype(np.int64)
        V = self._V
        labels = labels[(labels < len(live)) & (labels < len(V))]
        ok = live[labels] if mask is None else mask[labels] & live[labels]
        if excl_slots:
            ok &= ~np.isin(labels, excl_slots)
        labels = labels[ok]
        if mask is not None and len(labels) < min(limit, m):
            return None  # the filtered graph search came back short: answer exactly
        scores = V[labels] @ q
        return self._top(labels, scores, limit, min_cosine)

    def _hits(self, pairs: list[tuple[int, float]], limit: int) -> list[Hit]:
        rows = self._by_slot(s for s, _ in pairs)
        # a record deleted since the candidates were found is dropped
        found = [(rows[s][0], c, rows[s][1]) for s, c in pairs if s in rows]
        found.sort(key=lambda h: (-h[1], h[0]))
        return [Hit(i, float(c), json.loads(mj), score=float(c)) for i, c, mj in found[:limit]]

    # ------------------------------------------------------------------------------ the hnswlib index

    def _new_index(self, capacity: int) -> Any:
        import hnswlib  # type: ignore[import-untyped]

        index = hnswlib.Index(space="ip", dim=self.dim)
        index.init_index(
            max_elements=max(capacity, 1024),
            M=self.M,
            ef_construction=self.ef_construction,
            random_seed=100,
            allow_replace_deleted=True,
        )
        return index

    def _index_forget(self, slots: Iterable[int]) -> None:
        """mark_deleted the labels (caller holds _ilock)."""
        for s in slots:
            try:
                self._index.mark_deleted(int(s))
            except RuntimeError:  # not in the graph, or deleted already
                continue
            self._index_dirty = True

    def _index_add(self, vecs: np.ndarray, labels: np.ndarray) -> None:
        """Add vectors (caller holds _ilock)."""
        if len(labels) == 0:
            return
        index = self._index
        need = index.get_current_count() + len(labels)
        if need > index.get_max_elements():
            index.resize_index(max(need, int(index.get_max_elements() * 1.5)))
        index.add_items(vecs, labels, num_threads=self.threads, replace_deleted=True)
        self._index_dirty = True

    def _read_index_file(self) -> Any:
        """The saved index, or None when it is missing, of another shape or unreadable."""
        import hnswlib  # type: ignore[import-untyped]

        file = self.path / HNSW_FILE
        try:
            with open(file, "rb") as fh:
                head = fh.read(_HNSW_HEADER.size)
        except OSError:
            return None
        if len(head) < _HNSW_HEADER.size:
            return None
        fields = _HNSW_HEADER.unpack(head)
        max_el, count, label_off, data_off = fields[1], fields[2], fields[4], fields[5]
        if label_off - data_off != self._row_bytes or count > max_el:
            return None
        index = hnswlib.Index(space="ip", dim=self.dim)
        try:
            index.load_index(str(file), max_elements=max(max_el, 1024), allow_replace_deleted=True)
        except (RuntimeError, ValueError, MemoryError):
            return None
        return index

    def _ensure_index(self) -> Any:
        """Load (or build) the index and catch it up with SQLite (caller holds _ilock)."""
        if self._index is not None:
            return self._index
        with self._wlock:  # no write may change the live set while we reconcile
            live_slots = np.nonzero(self._live)[0]
            index = self._read_index_file()
            have = np.array(index.get_ids_list() if index is not None else [], dtype=np.int64)
            if index is not None and len(have) and int(have.max()) >= self._next:
                # labels SQLite never committed (SQLite lost its last transactions, e.g. on power
                # loss, after the index was saved): those slots will be handed out again, so the
                # graph cannot be patched -- rebuild it
                index = None
            if index is not None:
                self._index = index
                self._index_dirty = False
                self._index_forget(np.setdiff1d(have, live_slots, assume_unique=True).tolist())
                missing = np.setdiff1d(live_slots, have, assume_unique=True)
            else:
                self._index = self._new_index(int(len(live_slots) * 1.25) + 1)
                missing = live_slots
                self._index_dirty = True
            V = self._V
            step = 100_000
            for i in range(0, len(missing), step):
                part = missing[i : i + step]
                self._index_add(np.ascontiguousarray(V[part]), part)
        return self._index

    def _save_index(self) -> None:
        """Write the index atomically (caller holds _ilock)."""
        if self._index is None or not self._index_dirty:
            return
        final = self.path / HNSW_FILE
        tmp = self.path / (HNSW_FILE + ".tmp")
        self._index.save_index(str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        try:
            dfd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:  # pragma: no cover - directories cannot be fsync-ed everywhere
            pass
        self._index_dirty = False

    def _index_file_count(self) -> int:
        try:
            with open(self.path / HNSW_FILE, "rb") as fh:
                head = fh.read(_HNSW_HEADER.size)
            return _HNSW_HEADER.unpack(head)[2] if len(head) == _HNSW_HEADER.size else 0
        except OSError:
            return 0

    # ------------------------------------------------------------------------------ lifecycle

    def flush(self) -> None:
        """Checkpoint SQLite, and bring the saved index up to date when the collection is large
        enough to use it (a small lag is left for the next open to catch up)."""
        self._check_open()
        if self.read_only:
            return  # a reader never writes: its caught-up index lives in memory only
        with self._wlock, self._ilock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if (
                self._index is None
                and 0 < self._n
                and self._n >= self.exact_below
                and self._index_file_count() < 0.9 * self._n
            ):
                self._ensure_index()
            self._save_index()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._release()

    def _release(self) -> None:
        for con in getattr(self, "_readers", []):
            try:
                con.close()
            except sqlite3.Error:  # pragma: no cover
                pass
        self._readers = []
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        self._index = None
        self._columns = {}
        self._V = np.zeros((0, self.dim), np.float32)
        self._vmap = None  # the mapping closes when the last array using it is gone
        vfd = getattr(self, "_vfd", -1)
        if vfd >= 0:
            os.close(vfd)
            self._vfd = -1
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def stats(self) -> dict[str, Any]:
        self._check_open()
        disk = 0
        for p in self.path.iterdir():
            try:
                st = p.stat()
            except OSError:
                continue
            # allocated bytes: the vector file is grown sparsely ahead of use
            disk += min(st.st_size, st.st_blocks * 512) if hasattr(st, "st_blocks") else st.st_size
        return {
            "store": self.name,
            "count": self._n,
            "dim": self.dim,
            "index": "hnsw" if self._n >= self.exact_below else "exact",
            "hnsw_loaded": self._index is not None,
            "retired_slots": self._next - self._n,
            "disk_bytes": disk,
            "path": str(self.path),
        }
