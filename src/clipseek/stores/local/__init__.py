"""The embedded default store: SQLite (source of truth) + an mmap'd vector file + an hnswlib index.

Modules: ``store`` (:class:`LocalStore`: opening, writes, reads, search, check/repair),
``vectors`` (the vector file and its memory map), ``ann`` (the hnswlib cache and its file),
``columns`` (filter atoms as numpy columns). The top-k cut is shared with the memory store
(:mod:`clipseek.stores.topk`).

Layout of the directory the store owns::

    store.sqlite     records(slot, id, metadata JSON), atoms(field, slot, k, s, n, t),
                     field_counts(field, n), meta(key, value), damaged(id, metadata); WAL mode
    vectors.f32      float32 rows, row ``slot`` at byte ``slot * dim * 4`` (append-only by slot)
    hnsw.bin         the hnswlib graph; a derived cache, never the source of truth
    LOCK             an exclusive ``flock`` so two processes never write one store

Readers
    ``read_only=True`` takes no lock, so any number of readers (``clipseek search`` in another
    terminal) work while one writer indexes. A reader opens on one consistent snapshot, and then
    catches up before each read when another process has committed since (SQLite's
    ``PRAGMA data_version``; a no-op when nothing changed): it reloads the live slots and field
    counts in one read transaction, remaps the vector file (which already covers every committed
    slot), adds new atoms to its filter columns and patches its in-memory graph. So a long-lived
    reader never fails or loses records after writes; it keeps any index catch-up in memory and
    refuses writes.

Durability and atomicity
    Every record lives in a *slot*: an integer that is never reused (it is also the record's hnswlib
    label). An upsert of an existing id retires the old slot and takes a new one, so a slot's vector
    never changes once written. One ``upsert``/``delete``/``update_metadata`` call is one SQLite
    transaction; the vectors of an upsert are written to ``vectors.f32`` and ``fdatasync``-ed
    *before* that transaction commits (while holding SQLite's write lock), so a committed row always
    has its vector on disk and a killed process leaves either all of a call's records or none. Bytes
    past the last committed slot (from a call that died before committing) are garbage that the next
    upsert overwrites. ``update_metadata`` rewrites metadata, atoms and counts in place (same slot,
    no vector write) and bumps ``meta_gen`` so readers reload their filter columns.

The hnswlib index
    Saved atomically (temporary file, fsync, ``os.replace``) on :meth:`flush`/:meth:`close`, loaded
    lazily on the first search that needs it. Whatever state the file is in (missing, older than
    SQLite, unreadable) the store catches up on load: it adds the live slots the index lacks and
    ``mark_deleted``-s the labels SQLite no longer has, or rebuilds from SQLite + vectors. The header
    is checked field by field before hnswlib sees the file, so a damaged one costs nothing. A writer
    records which database state the saved file covers (``meta.ann_state``) and, on flush/close,
    re-saves a file that is damaged or lags (collections at or above ``exact_below``). A reader keeps
    a small catch-up in memory but never rebuilds the whole graph (that would cost every process
    start seconds to minutes): without a usable file it answers with the exact scan and logs a hint
    to run ``clipseek repair``, as it does when it has to add more than ``READER_CATCH_UP_HINT``.

Damage
    Unreadable or inconsistent files raise :class:`~clipseek.errors.CollectionDamaged` naming the
    file. Stored vectors are unit length, so a row whose norm is off is damaged: search and get
    refuse to return it; a writer opening a truncated vector file extends it with zero rows, which
    are damaged rows like any other. :meth:`LocalStore.check` verifies SQLite, every live vector and the index;
    :meth:`LocalStore.repair` rebuilds atoms, field counts and the index, and moves records with
    damaged vectors to the ``damaged`` table (kept until re-indexed, reported by check).

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

from .store import DB_FILE, FORMAT_VERSION, HNSW_FILE, LOCK_FILE, VEC_FILE, LocalStore

__all__ = ["DB_FILE", "FORMAT_VERSION", "HNSW_FILE", "LOCK_FILE", "VEC_FILE", "LocalStore"]
