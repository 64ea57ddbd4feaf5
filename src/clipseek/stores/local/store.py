""":class:`LocalStore`: SQLite (the source of truth) + the vector file + the ANN cache; see the
package docstring for the layout, the durability rules and how readers see writes."""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ...errors import BadVector, ClipseekError, CollectionDamaged
from ...filters import Condition
from ...types import Hit, Record, as_unit_vectors
from ..base import VectorStore, metadata_json
from ..topk import cosines, top_candidates
from .ann import AnnCache, header_problem
from .columns import AtomCache, AtomRow, Columns
from .vectors import VectorFile

try:  # POSIX only; elsewhere the store simply does not guard against a second process
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("clipseek")
T = TypeVar("T")

FORMAT_VERSION = "1"
DB_FILE = "store.sqlite"
VEC_FILE = "vectors.f32"
HNSW_FILE = "hnsw.bin"
LOCK_FILE = "LOCK"
# A reader that has to add more than this many vectors to the saved index (or rebuild it) says
# so, and suggests `clipseek repair`; a writer repairs the file itself on flush/close.
READER_CATCH_UP_HINT = 2_000
IDS_CHUNK = 50_000  # slots per query when ids(where) reads the matching ids

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
CREATE TABLE IF NOT EXISTS damaged(id TEXT PRIMARY KEY, metadata TEXT NOT NULL) WITHOUT ROWID;
"""


def _damaged_db(db_file: Path, e: sqlite3.DatabaseError) -> CollectionDamaged:
    return CollectionDamaged(
        f"{db_file}: cannot be read ({e}); the database is damaged: restore it from a backup or re-index "
        "into a new collection"
    )


def _names_damage(fn: Callable[..., T]) -> Callable[..., T]:
    """SQLite may meet a damaged page only when a read reaches it: name the file, no traceback."""

    @functools.wraps(fn)
    def wrapper(self: LocalStore, *args: Any, **kwargs: Any) -> T:
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise
            raise _damaged_db(self.path / DB_FILE, e) from None

    return wrapper


C = TypeVar("C", bound=type)


def _names_damage_in(*methods: str) -> Callable[[C], C]:
    """Wrap the named methods with :func:`_names_damage`. Done on the class rather than with
    ``@_names_damage`` on each method because mutmut never mutates a decorated function, and these
    are the store's main paths (tests/README.md, "Mutation testing")."""

    def wrap(cls: C) -> C:
        for name in methods:
            setattr(cls, name, _names_damage(getattr(cls, name)))
        return cls

    return wrap


def _bump_meta_gen(db: sqlite3.Connection) -> None:
    """Tell readers that atoms of existing slots changed (they reload their filter columns)."""
    db.execute(
        "INSERT INTO meta(key, value) VALUES ('meta_gen', '1') "
        "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
    )


@_names_damage_in(
    "upsert", "update_metadata", "delete", "get", "count", "fields", "ids", "fingerprints", "search", "check", "repair"
)
class LocalStore(VectorStore):
    """SQLite + mmap'd vectors + hnswlib (the default; on disk, one writer and many readers).

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
        super().__init__(Path(path), int(dim))  # refuses a dimension below 1
        self.path: Path = Path(path)
        self.exact_below = int(exact_below)
        self.filtered_exact_fraction = float(filtered_exact_fraction)
        self.ef_search = int(ef_search)
        self.threads = int(threads)
        self._closed = False
        self.read_only = bool(read_only)
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._vec: VectorFile | None = None
        self._wlock = threading.RLock()  # writes, the main connection, in-memory state changes
        self._ilock = threading.RLock()  # the hnswlib index (lock order: _wlock, then _ilock)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._atom_cache = AtomCache()
        self._ann_refused = False  # a reader found no usable saved index: exact scans until data changes
        # the in-memory state, read from SQLite by _load_state
        self._next = 0  # the next slot to hand out
        self._n = 0  # live records
        self._max_slot = -1
        self._live = np.zeros(0, dtype=bool)  # by slot: whether the slot holds a live record
        self._field_counts: dict[str, int] = {}
        self._meta_gen = "0"  # bumped by writes that change existing slots' atoms
        self._data_version = 0  # SQLite's data_version when a reader last caught up
        self._columns = Columns(self._load_column, self._wlock)
        self._ann = AnnCache(
            self.path / HNSW_FILE, self.dim, M=int(M), ef_construction=int(ef_construction), threads=self.threads
        )
        try:
            self._open()
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------------------------ opening

    def _open(self) -> None:
        db_file, vec_file = self.path / DB_FILE, self.path / VEC_FILE
        if self.path.exists() and not self.path.is_dir():
            raise CollectionDamaged(f"{self.path} should be the store's folder but is a file; move it away")
        if self.read_only and not db_file.is_file():
            raise ClipseekError(f"no local store at {self.path}")
        if _size(db_file) == 0 and _size(vec_file) > 0 and _size(Path(str(db_file) + "-wal")) <= 0:
            # SQLite would take an empty file for a new database and start afresh over the old vectors
            raise CollectionDamaged(
                f"{db_file} is empty or missing but {VEC_FILE} holds vectors: the database was truncated or "
                "deleted and its records cannot be recovered; re-index into a new collection"
            )
        try:
            if not self.read_only:
                self.path.mkdir(parents=True, exist_ok=True)
                self._lock_fd = self._take_lock()
            self._db = self._connect()
            if self.read_only:
                self._db.execute("BEGIN")  # one consistent snapshot for the whole open
                self._init_meta()
                self._load_state()
                self._check_vector_file(vec_file)
                self._vec = VectorFile(vec_file, self.dim, read_only=True)  # after the rows: covers them all
                self._db.execute("COMMIT")
            else:
                self._db.executescript(_SCHEMA)
                self._init_meta()
                self._load_state()
                self._check_vector_file(vec_file)
                self._vec = VectorFile(vec_file, self.dim, read_only=False)
            self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.OperationalError as e:  # cannot open or lock: permissions, a read-only folder
            raise ClipseekError(
                f"{db_file}: cannot open ({e}); check that {self.path} and its files are readable"
                f"{'' if self.read_only else ' and writable'} by you"
            ) from None
        except sqlite3.DatabaseError as e:
            raise _damaged_db(db_file, e) from None
        except PermissionError as e:
            raise ClipseekError(
                f"{e.filename or self.path}: permission denied ({'read' if self.read_only else 'write'})"
            ) from None
        except (NotADirectoryError, IsADirectoryError, FileExistsError) as e:
            raise CollectionDamaged(f"{e.filename or self.path}: {e.strerror}; the store's folder is damaged") from None
        self._check_vectors_cover_records()

    def _check_vector_file(self, vec_file: Path) -> None:
        if self._next > 0 and not vec_file.is_file():
            raise CollectionDamaged(
                f"{vec_file} is missing but the store holds {self._n} records: their vectors are lost; "
                "re-index into a new collection"
            )

    def _take_lock(self) -> int | None:
        fd = _lock(self.path)
        if fd is None and fcntl is not None:
            raise ClipseekError(
                f"the store at {self.path} is already open (in this or another process); close it first"
            )
        return fd

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path / DB_FILE, isolation_level=None, check_same_thread=False, timeout=30.0)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA busy_timeout=30000")
        return con

    def _init_meta(self) -> None:
        db = self._main()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if not meta and self.read_only:
            raise ClipseekError(f"the local store at {self.path} was never written to")
        if not meta:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                [("format", FORMAT_VERSION), ("dim", str(self.dim)), ("next_slot", "0")],
            )
            db.execute("COMMIT")
            return
        if meta.get("format") != FORMAT_VERSION:
            raise ClipseekError(f"{self.path}: unsupported local store format {meta.get('format')!r}")
        stored = int(meta["dim"])
        if stored != self.dim:
            raise BadVector(
                f"the store at {self.path} holds {stored}-d vectors; it cannot be opened for {self.dim}-d vectors"
            )

    def _load_state(self, known: tuple[np.ndarray, int, int] | None = None) -> None:
        """Read next_slot, the live slots and the field counts (inside the caller's transaction).

        ``known`` = (live, next_slot, count) a reader already has: when every slot it knew is still
        there (only appends since), only the new slots are read -- the full read of the slots is
        0.5 s at a million records, counting them 0.08 s."""
        db = self._main()
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('next_slot', 'meta_gen')"))
        self._next = int(meta["next_slot"])
        self._meta_gen = meta.get("meta_gen", "0")
        self._field_counts = dict(db.execute("SELECT field, n FROM field_counts"))
        if known is not None:
            old_live, old_next, old_n = known
            if db.execute("SELECT count(*) FROM records WHERE slot < ?", (old_next,)).fetchone()[0] == old_n:
                new = np.array(
                    [r[0] for r in db.execute("SELECT slot FROM records WHERE slot >= ?", (old_next,))], np.int64
                )
                live = np.zeros(max(self._next, len(old_live)), dtype=bool)
                live[: len(old_live)] = old_live
                live[new] = True
                self._live, self._n = live, old_n + len(new)
                self._max_slot = max(self._max_slot, int(new.max())) if len(new) else self._max_slot
                return
        slots = np.array([r[0] for r in db.execute("SELECT slot FROM records")], dtype=np.int64)
        self._max_slot = int(slots.max()) if len(slots) else -1
        live = np.zeros(max(self._next, 1024), dtype=bool)
        live[slots] = True
        self._live = live
        self._n = len(slots)

    def _check_vectors_cover_records(self) -> None:
        vec = self._vecs()
        vrows = vec.rows
        if self._max_slot >= vrows and not self.read_only:
            # Vectors are durable before their rows commit, so this is damage (a truncated or
            # replaced file). Extending it with zero rows makes the lost vectors what they are:
            # damaged rows, which search refuses, check lists and repair sets aside by id.
            lost = int(self._live[vrows : self._max_slot + 1].sum())
            log.warning(
                "%s is shorter than the records need: %d vectors are lost; run `clipseek repair` to set those "
                "records aside for re-indexing",
                vec.file,
                lost,
            )
            vec.ensure_rows(self._max_slot + 1)
            vrows = vec.rows
        if self._max_slot >= vrows:
            raise CollectionDamaged(
                f"{vec.file} is shorter than the records need (the file was truncated or replaced); "
                "run `clipseek repair` to set the records whose vectors are lost aside for re-indexing"
            )
        if vrows > len(self._live):
            self._grow_live(vrows)

    # ------------------------------------------------------------------------------ helpers

    def _main(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    def _vecs(self) -> VectorFile:
        assert self._vec is not None
        return self._vec

    @property
    def _index(self) -> Any:
        return self._ann.index

    @property
    def _index_dirty(self) -> bool:
        return self._ann.dirty

    def _check_open(self) -> None:
        if self._closed:
            raise ClipseekError(f"the store at {self.path} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise ClipseekError(f"the store at {self.path} is open read-only")

    def _reader(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._connect()
            self._local.con = con
            with self._wlock:
                self._readers.append(con)
        return con

    def _grow_live(self, rows: int) -> None:
        if rows > len(self._live):
            live = np.zeros(max(rows, int(len(self._live) * 1.5)), dtype=bool)
            live[: len(self._live)] = self._live
            self._live = live

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

    def _load_column(self, field: str) -> list[AtomRow]:
        return self._main().execute("SELECT slot, s, n, t FROM atoms WHERE field=?", (field,)).fetchall()

    def _rows_for(self, slots: Sequence[int]) -> np.ndarray:
        """The vector matrix, remapped when it does not reach ``slots`` yet (rows another process
        committed after this reader last looked), refusing damaged rows."""
        vec = self._vecs()
        if slots and max(slots) >= vec.rows:
            with self._wlock:
                vec.remap()
        if slots and max(slots) >= vec.rows:
            raise CollectionDamaged(f"{vec.file} is shorter than the records need; run `clipseek check`")
        bad = vec.damaged(np.asarray(slots, dtype=np.int64))
        if len(bad):
            ids = sorted(i for i, _m in self._by_slot(bad.tolist()).values())
            raise CollectionDamaged(
                f"{vec.file}: the stored vectors of {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''} are damaged; "
                "run `clipseek check` for the full list and `clipseek repair` to set them aside for re-indexing"
            )
        return vec.V

    # ------------------------------------------------------------------------------ readers catch up

    def _catch_up(self) -> None:
        """A reader follows the writer: when another connection committed since this store last
        looked (SQLite's data_version), reload the live slots and field counts in one snapshot,
        remap the vector file (vectors are durable before their rows commit), add the new slots'
        atoms to the loaded columns and patch an in-memory graph. Cheap when nothing changed."""
        if not self.read_only:
            return  # the only writer: its in-memory state is always current
        with self._wlock:
            db = self._main()
            version = db.execute("PRAGMA data_version").fetchone()[0]
            if version == self._data_version:
                return
            old_live, old_next, old_gen = self._live, self._next, self._meta_gen
            db.execute("BEGIN")
            try:
                self._load_state(known=(old_live, old_next, self._n))
                self._vecs().remap()
                fresh = {
                    f: db.execute("SELECT slot, s, n, t FROM atoms WHERE field=? AND slot>=?", (f, old_next)).fetchall()
                    for f in self._columns.loaded()
                }
            finally:
                db.execute("COMMIT")
            self._data_version = version
            self._ann_refused = False  # a writer may have saved a usable index meanwhile
            self._check_vectors_cover_records()
            if self._meta_gen != old_gen:
                self._columns.forget()  # metadata rewritten in place: reload on use
            else:
                self._columns.add((f, *row[:1], 0, *row[1:]) for f, rows in fresh.items() for row in rows)
            with self._ilock:
                if self._ann.index is not None:
                    n = max(len(old_live), len(self._live))
                    was, now = np.zeros(n, bool), np.zeros(n, bool)
                    was[: len(old_live)], now[: len(self._live)] = old_live, self._live
                    self._ann.forget(np.nonzero(was & ~now)[0].tolist())
                    self._ann.add_slots(np.nonzero(now & ~was)[0], self._vecs().V)

    # ------------------------------------------------------------------------------ writes

    def upsert(self, records: Sequence[Record]) -> None:
        self._check_writable()
        if not records:
            return
        last: dict[str, Record] = {}
        for r in records:
            if not isinstance(r.id, str) or not r.id:
                raise ClipseekError(f"record ids must be non-empty strings, got {r.id!r}")
            last[r.id] = r  # a repeated id: the last one wins
        recs = list(last.values())
        try:
            stacked = np.stack([np.asarray(r.vector, dtype=np.float32) for r in recs])
        except (ValueError, TypeError) as e:
            raise BadVector(f"record vectors must all be {self.dim}-d numeric vectors: {e}") from None
        vecs = as_unit_vectors(stacked, self.dim)
        if vecs.shape[0] != len(recs):
            raise BadVector(f"expected one {self.dim}-d vector per record, got shape {stacked.shape}")
        metas = [metadata_json(r.metadata) for r in recs]

        with self._wlock:
            db = self._main()
            db.execute("BEGIN IMMEDIATE")
            try:
                start = int(db.execute("SELECT value FROM meta WHERE key='next_slot'").fetchone()[0])
                k = len(recs)
                # 1. vectors, durable before the rows that point at them commit
                self._vecs().write(start, vecs)
                # 2. retire the old slots of ids that exist already
                old = self._lookup(db, [r.id for r in recs])
                old_slots, delta = self._retire(db, old)
                # 3. the new rows
                slots = range(start, start + k)
                db.executemany(
                    "INSERT INTO records(slot, id, metadata) VALUES (?, ?, ?)",
                    zip(slots, (r.id for r in recs), metas),
                )
                db.execute(
                    "DELETE FROM damaged WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(last)),)
                )
                atom_rows = []
                for slot, r in zip(slots, recs):
                    for f, v in r.metadata.items():
                        delta[f] = delta.get(f, 0) + 1
                        atom_rows.extend(self._atoms(f, slot, v))
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
            self._columns.add(atom_rows)
            with self._ilock:
                if self._ann.index is not None:
                    self._ann.forget(old_slots)
                    self._ann.add(vecs, np.arange(start, start + k))

    def _atoms(self, field: str, slot: int, value: Any) -> list[tuple[Any, ...]]:
        return [(field, slot, j, a.s, a.n, a.t) for j, a in enumerate(self._atom_cache.atoms(value))]

    def update_metadata(self, updates: Mapping[str, Mapping[str, Any]]) -> int:
        """Merge ``updates[id]`` into each existing record's metadata in one transaction: the
        record keeps its slot and vector (nothing is written to the vector file or the graph);
        only the updated fields' atoms and counts change. Unknown ids are ignored."""
        self._check_writable()
        if not updates:
            return 0
        for rid in updates:
            if not isinstance(rid, str) or not rid:
                raise ClipseekError(f"record ids must be non-empty strings, got {rid!r}")
        changes = {rid: dict(upd) for rid, upd in updates.items()}
        touched = sorted({f for upd in changes.values() for f in upd})
        with self._wlock:
            db = self._main()
            db.execute("BEGIN IMMEDIATE")
            try:
                old = self._lookup(db, list(changes))
                delta: dict[str, int] = {}
                rows, drop, atom_rows = [], [], []
                for rid, slot, meta_json in old:
                    meta = json.loads(meta_json)
                    upd = changes[rid]
                    for f, v in upd.items():
                        if f not in meta:
                            delta[f] = delta.get(f, 0) + 1
                        drop.append((f, slot))
                        atom_rows.extend(self._atoms(f, slot, v))
                    meta.update(upd)
                    rows.append((metadata_json(meta), slot))
                db.executemany("UPDATE records SET metadata=? WHERE slot=?", rows)
                db.executemany("DELETE FROM atoms WHERE field=? AND slot=?", drop)
                db.executemany("INSERT INTO atoms(field, slot, k, s, n, t) VALUES (?, ?, ?, ?, ?, ?)", atom_rows)
                self._apply_counts(db, delta)
                if old:
                    _bump_meta_gen(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if old:
                self._merge_counts(delta)
                self._columns.forget(touched)
            return len(old)

    def delete(self, ids: Iterable[str]) -> int:
        self._check_writable()
        ids = list(dict.fromkeys(ids))
        if not ids:
            return 0
        with self._wlock:
            db = self._main()
            db.execute("BEGIN IMMEDIATE")
            try:
                old = self._lookup(db, ids)
                old_slots, delta = self._retire(db, old)
                self._apply_counts(db, delta)
                db.execute("DELETE FROM damaged WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._forget_slots(old_slots, delta)
            return len(old_slots)

    def _forget_slots(self, old_slots: list[int], delta: dict[str, int]) -> None:
        if old_slots:
            self._live[old_slots] = False
            self._n -= len(old_slots)
            self._merge_counts(delta)
            with self._ilock:
                if self._ann.index is not None:
                    self._ann.forget(old_slots)

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

    # ------------------------------------------------------------------------------ reads

    def get(self, ids: Sequence[str]) -> list[Record | None]:
        self._check_open()
        self._catch_up()
        ids = list(ids)
        found = {i: (slot, meta) for i, slot, meta in self._lookup(self._reader(), ids)}
        V = self._rows_for([s for s, _m in found.values()])
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
        self._catch_up()
        if not where:
            return self._n
        return int(self._mask(where).sum())

    def fields(self) -> list[str]:
        self._check_open()
        self._catch_up()
        return sorted(self._field_counts)

    def ids(self, where: Sequence[Condition] = ()) -> list[str]:
        self._check_open()
        self._catch_up()
        if not where:
            return [r[0] for r in self._reader().execute("SELECT id FROM records")]
        slots = np.nonzero(self._mask(where))[0].tolist()
        out: list[str] = []
        for i in range(0, len(slots), IDS_CHUNK):
            out.extend(
                r[0]
                for r in self._reader().execute(
                    "SELECT id FROM records WHERE slot IN (SELECT value FROM json_each(?))",
                    (json.dumps(slots[i : i + IDS_CHUNK]),),
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

    @_names_damage
    def values(self, key: str) -> dict[str, Any]:
        self._check_open()
        path = "$." + json.dumps(key)  # quoted: any key is one path step
        rows = self._reader().execute(
            "SELECT id, json_extract(metadata, ?), json_type(metadata, ?) FROM records "
            "WHERE json_type(metadata, ?) IS NOT NULL",
            (path, path, path),
        )
        return {i: json.loads(v) if t in ("array", "object") else v for i, v, t in rows}

    def _mask(self, where: Sequence[Condition]) -> np.ndarray:
        return self._columns.mask(where, self._live, self._field_counts)

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
        self._catch_up()
        where = list(where)
        mask = self._mask(where) if where else None  # raises BadFilter before any other work
        limit = int(limit)
        if limit <= 0 or self._n == 0:
            return []
        live = self._live  # read before V: a writer remaps V before it marks new slots live
        # (a slot past ``live`` was committed after it was read: not a candidate either)
        excl_slots = [s for _i, s, _m in self._lookup(self._reader(), list(exclude)) if s < len(live)]
        if mask is not None:
            mask[excl_slots] = False
            m = int(mask.sum())
        else:
            m = self._n - int(live[excl_slots].sum())
        if m <= 0:
            return []

        n = self._n
        exact = n < self.exact_below or (
            mask is not None and m <= max(self.exact_below, self.filtered_exact_fraction * n)
        )
        pairs: tuple[np.ndarray, np.ndarray] | None = None
        if not exact:
            pairs = self._search_hnsw(q, limit, mask, m, excl_slots, live, min_cosine)
        if pairs is None:
            if mask is None:
                mask = live.copy()
                mask[excl_slots] = False
            pairs = self._search_exact(q, mask, limit, min_cosine)
        return self._hits(*pairs, limit)

    @_names_damage
    def neighbours(
        self, ids: Sequence[str], limit: int, min_cosine: float | None = None
    ) -> list[list[tuple[str, float]]]:
        """Many self-queries at once: one matrix product per chunk of queries (exact, below
        ``exact_below``) or one multi-threaded hnswlib call (the graph), instead of a Python-level
        search per record (about 2.5x faster on 2 cores; benchmarks/README.md)."""
        self._check_open()
        self._catch_up()
        ids = list(ids)
        slot_of = {i: s for i, s, _m in self._lookup(self._reader(), ids)}
        asked = [i for i in ids if i in slot_of]
        found: dict[str, list[tuple[str, float]]] = {}
        if asked and limit > 0 and self._n > 1:
            q_slots = np.asarray([slot_of[i] for i in asked], dtype=np.int64)
            V = self._rows_for(q_slots.tolist())
            live = self._live[: len(V)]
            Q = np.asarray(V[q_slots], dtype=np.float32)
            graph = None
            if self._n >= self.exact_below:
                graph = self._neighbours_graph(Q, q_slots, limit, live, min_cosine)
            rows = graph if graph is not None else self._neighbours_exact(Q, q_slots, limit, live, min_cosine)
            by_slot = self._by_slot({s for row in rows for s in row[0].tolist()})
            self._rows_for(list(by_slot))  # refuses neighbours whose vectors are damaged
            for rid, (slots, scores) in zip(asked, rows):
                pairs = [(by_slot[s][0], float(c)) for s, c in zip(slots.tolist(), scores.tolist()) if s in by_slot]
                pairs.sort(key=lambda p: (-p[1], p[0]))
                found[rid] = pairs[:limit]
        return [list(found.get(i, [])) for i in ids]

    def _neighbours_exact(
        self, Q: np.ndarray, q_slots: np.ndarray, limit: int, live: np.ndarray, min_cosine: float | None, chunk: int = 256
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        V = self._vecs().V[: len(live)]
        cand = np.nonzero(live)[0]
        out = []
        for i in range(0, len(Q), chunk):
            S = V[cand] @ Q[i : i + chunk].T  # (candidates, queries)
            for j in range(S.shape[1]):
                keep = cand != q_slots[i + j]
                out.append(top_candidates(cand[keep], S[keep, j], limit, min_cosine))
        return out

    def _neighbours_graph(
        self, Q: np.ndarray, q_slots: np.ndarray, limit: int, live: np.ndarray, min_cosine: float | None
    ) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """None when the caller should fall back to the exact scan."""
        if self._ann.index is None:
            if self._ann_refused:
                return None
            with self._wlock, self._ilock:
                self._ensure_index()
        with self._ilock:
            index = self._ann.index
            if index is None:
                return None
            k = min(self._n, limit + 3)  # the query itself, and a little slack for deleted labels
            index.set_ef(max(self.ef_search, k))
            try:
                labels, _dist = index.knn_query(Q, k=k, num_threads=self.threads)
            except RuntimeError:
                return None
        V = self._vecs().V
        out = []
        for q, own, row in zip(Q, q_slots, labels.astype(np.int64)):
            row = row[(row < len(live)) & (row < len(V))]
            row = row[live[row] & (row != own)]
            out.append(top_candidates(row, cosines(V[row], q), limit, min_cosine))
        return out

    def _search_exact(
        self, q: np.ndarray, mask: np.ndarray, limit: int, min_cosine: float | None
    ) -> tuple[np.ndarray, np.ndarray]:
        V = self._vecs().V
        cand = np.nonzero(mask[: len(V)])[0]  # search returns early when nothing matches; empty would do too
        if len(cand) * 2 > self._next:  # most rows: one pass over the whole (contiguous) matrix
            scores = cosines(V[: int(cand[-1]) + 1], q)[cand]
        else:
            scores = cosines(V[cand], q)
        return top_candidates(cand, scores, limit, min_cosine)

    def _search_hnsw(
        self,
        q: np.ndarray,
        limit: int,
        mask: np.ndarray | None,
        m: int,
        excl_slots: list[int],
        live: np.ndarray,
        min_cosine: float | None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Graph search; None when the caller should fall back to the exact scan."""
        if self._ann.index is None:
            if self._ann_refused:
                return None
            with self._wlock, self._ilock:
                self._ensure_index()
        with self._ilock:
            index = self._ann.index
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
        V = self._vecs().V
        labels = labels[(labels < len(live)) & (labels < len(V))]
        ok = live[labels] if mask is None else mask[labels] & live[labels]
        if excl_slots:
            ok &= ~np.isin(labels, excl_slots)
        labels = labels[ok]
        if mask is not None and len(labels) < min(limit, m):
            return None  # the filtered graph search came back short: answer exactly
        scores = cosines(V[labels], q)
        return top_candidates(labels, scores, limit, min_cosine)

    def _hits(self, slots: np.ndarray, cosines: np.ndarray, limit: int) -> list[Hit]:
        pairs = list(zip(slots.tolist(), cosines.tolist()))
        rows = self._by_slot(s for s, _ in pairs)
        # a record deleted since the candidates were found is dropped
        found = [(rows[s][0], c, rows[s][1], s) for s, c in pairs if s in rows]
        found.sort(key=lambda h: (-h[1], h[0]))
        found = found[:limit]
        self._rows_for([s for *_x, s in found])  # refuses hits whose vectors are damaged
        return [Hit(i, float(c), json.loads(mj), score=float(c)) for i, c, mj, _s in found]

    # ------------------------------------------------------------------------------ the ANN cache

    def _ensure_index(self) -> Any:
        """Load (or build) the index and catch it up with SQLite (caller holds _wlock and _ilock)."""
        if self._ann.index is not None:
            return self._ann.index
        # A reader never rebuilds the whole graph (minutes at a million records, on every process
        # start): without a usable file it answers with the exact scan until a writer saves one.
        added = self._ann.ensure(np.nonzero(self._live)[0], self._next, self._vecs().V, rebuild=not self.read_only)
        problem = self._ann.problem
        if self.read_only and self._ann.index is None:
            self._ann_refused = True
            if problem != "missing":
                log.warning(
                    "%s: the saved index is %s; searches scan every vector until it is rebuilt: run `clipseek repair`",
                    self._ann.file,
                    problem,
                )
        elif self.read_only and added > READER_CATCH_UP_HINT:
            log.warning(
                "%s: the saved index lags the database by %d vectors, which every reader adds in memory "
                "until a writer saves it: run `clipseek repair`",
                self._ann.file,
                added,
            )
        return self._ann.index

    def _ann_state(self) -> str:
        return f"{self._next}:{self._n}"

    def _ann_recorded(self) -> str | None:
        """The database state the saved index covers (None: not recorded, as in collections
        written before it was)."""
        row = self._main().execute("SELECT value FROM meta WHERE key='ann_state'").fetchone()
        return None if row is None else str(row[0])

    def _ann_current(self) -> bool:
        """Whether the saved index file is sound and known to cover exactly what SQLite holds."""
        if header_problem(self._ann.file, self.dim) is not None:
            return False
        return self._ann_recorded() == self._ann_state()

    def _save_index(self) -> None:
        """Save the loaded graph when it changed, and record which database state the file covers
        (caller holds _wlock and _ilock; writers only)."""
        if self._ann.index is None:
            return
        self._ann.save()  # an index that is not dirty equals the file: both cover the current state
        if not self._ann_current():
            self._main().execute(
                "INSERT INTO meta(key, value) VALUES ('ann_state', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (self._ann_state(),),
            )

    # ------------------------------------------------------------------------------ lifecycle

    def flush(self) -> None:
        """Checkpoint SQLite, and save the index when the collection is large enough to use it
        and the saved file is damaged or lags the database (so no reader has to catch up)."""
        self._check_open()
        if self.read_only:
            return  # a reader never writes: its caught-up index lives in memory only
        with self._wlock, self._ilock:
            self._main().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if self._ann.index is None and 0 < self._n and self._n >= self.exact_below and not self._ann_current():
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
        if self._db is not None:
            self._db.close()
        self._ann.index = None
        self._columns.forget()
        if self._vec is not None:
            self._vec.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # ------------------------------------------------------------------------------ check and repair

    def check(self) -> dict[str, Any]:
        """Verify the store without changing it: SQLite's integrity, every live vector's norm,
        the saved index, and the records set aside by an earlier repair."""
        self._check_open()
        self._catch_up()
        problems: list[dict[str, Any]] = []
        db = self._reader()
        verdict = [r[0] for r in db.execute("PRAGMA quick_check")]
        if verdict != ["ok"]:
            problems.append(
                {
                    "file": str(self.path / DB_FILE),
                    "problem": "; ".join(verdict[:5]),
                    "fix": "re-index into a new collection",
                }
            )
        damaged = self._damaged_ids()
        if damaged:
            problems.append(
                {
                    "file": str(self._vecs().file),
                    "problem": f"{len(damaged)} records have damaged vectors",
                    "ids": damaged,
                    "fix": "`clipseek repair` sets them aside; then re-index them",
                }
            )
        waiting = (
            [r[0] for r in db.execute("SELECT id FROM damaged ORDER BY id")] if self._has_damaged_table(db) else []
        )
        if waiting:
            problems.append(
                {
                    "file": str(self.path / DB_FILE),
                    "problem": f"{len(waiting)} records lost their vectors and await re-indexing",
                    "ids": waiting,
                    "fix": "re-index them (`clipseek index` on their folder encodes them again)",
                }
            )
        if self._n >= self.exact_below and self._n > 0:
            problem = header_problem(self._ann.file, self.dim)
            recorded = self._ann_recorded()
            if problem is None and recorded is not None and recorded != self._ann_state():
                problem = "behind the database"
            if problem is not None:
                problems.append(
                    {
                        "file": str(self._ann.file),
                        "problem": f"the ANN index is {problem}",
                        "fix": "`clipseek repair` rebuilds it",
                    }
                )
        return {"ok": not problems, "records": self._n, "problems": problems}

    def _damaged_ids(self) -> list[str]:
        bad = self._vecs().damaged(np.nonzero(self._live)[0])
        return sorted(i for i, _m in self._by_slot(bad.tolist()).values())

    @staticmethod
    def _has_damaged_table(db: sqlite3.Connection) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE name='damaged'").fetchone() is not None

    def repair(self) -> dict[str, Any]:
        """Rebuild what is derived (the filter atoms and field counts from the records' metadata,
        the ANN index from the vectors) and set aside records whose vectors are damaged: their
        ids and metadata move to the ``damaged`` table, so search no longer meets them and the
        next ``index`` run encodes them again; nothing is dropped silently."""
        self._check_writable()
        with self._wlock, self._ilock:
            db = self._main()
            verdict = [r[0] for r in db.execute("PRAGMA quick_check")]
            if verdict != ["ok"]:
                raise CollectionDamaged(
                    f"{self.path / DB_FILE} is damaged ({'; '.join(verdict[:3])}); the records cannot be "
                    "repaired in place: re-index into a new collection"
                )
            bad = self._vecs().damaged(np.nonzero(self._live)[0])
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(
                    "SELECT id, slot, metadata FROM records WHERE slot IN (SELECT value FROM json_each(?))",
                    (json.dumps(bad.tolist()),),
                ).fetchall()
                db.executemany(
                    "INSERT OR REPLACE INTO damaged(id, metadata) VALUES (?, ?)", [(i, m) for i, _s, m in rows]
                )
                db.executemany("DELETE FROM records WHERE slot=?", [(s,) for _i, s, _m in rows])
                db.execute("DELETE FROM atoms")
                db.execute("DELETE FROM field_counts")
                delta: dict[str, int] = {}
                for slot, meta_json in db.execute("SELECT slot, metadata FROM records").fetchall():
                    atom_rows = []
                    for f, v in json.loads(meta_json).items():
                        delta[f] = delta.get(f, 0) + 1
                        atom_rows.extend(self._atoms(f, slot, v))
                    db.executemany("INSERT INTO atoms(field, slot, k, s, n, t) VALUES (?, ?, ?, ?, ?, ?)", atom_rows)
                self._apply_counts(db, delta)
                _bump_meta_gen(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._load_state()
            self._columns.forget()
            self._ann.index = None
            rebuilt = ["filter atoms and field counts"]
            if self._n:
                self._ann.file.unlink(missing_ok=True)  # rebuild from scratch, not patch a suspect graph
                self._ensure_index()
                self._save_index()
                rebuilt.append("ANN index")
        return {"records": self._n, "rebuilt": rebuilt, "set_aside": sorted(i for i, _s, _m in rows)}

    @classmethod
    @contextmanager
    def exclusive(cls, path: Path | None) -> Iterator[None]:
        """Hold the writer lock of the store at ``path`` without opening it (so a damaged store
        can be dropped too); raises when another store has it open for writing."""
        if path is None or not path.is_dir():
            yield
            return
        fd = _lock(path)
        if fd is None and fcntl is not None:
            raise ClipseekError(
                f"the store at {path} is open for writing (an `index` run?); wait for it to finish, then try again"
            )
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)

    def stats(self) -> dict[str, Any]:
        self._check_open()
        self._catch_up()
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
            "hnsw_loaded": self._ann.index is not None,
            "retired_slots": self._next - self._n,
            "disk_bytes": disk,
            "path": str(self.path),
        }


def _size(file: Path) -> int:
    """The file's size; -1 when it does not exist."""
    try:
        return file.stat().st_size
    except OSError:
        return -1


def _lock(path: Path) -> int | None:
    """An fd holding the exclusive flock on ``path/LOCK``; None when another holder has it (or
    there is no flock on this platform)."""
    if fcntl is None:  # pragma: no cover
        return None
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
