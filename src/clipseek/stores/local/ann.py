"""The local store's ANN cache: an hnswlib graph over the live slots (label = slot), saved to
``hnsw.bin``. It is derived data: whatever state the file is in (missing, older than SQLite,
damaged) it is caught up from, or rebuilt from, SQLite + the vector file."""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

# hnswlib's file header: offsetLevel0, max_elements, cur_element_count, size_data_per_element,
# label_offset, offsetData, maxlevel, enterpoint_node, maxM, maxM0, M, mult, ef_construction
HEADER = struct.Struct("<QQQQQQiIQQQdQ")


def header_problem(file: Path, dim: int) -> str | None:
    """Why ``file`` cannot be a saved index of ``dim``-d vectors (None when it may be one).

    hnswlib trusts its header: a damaged one makes it allocate or walk garbage for many seconds
    before it fails, so every field is checked against the layout hnswlib writes, and the file
    must be long enough for the element count it claims."""
    try:
        with open(file, "rb") as fh:
            head = fh.read(HEADER.size)
            size = os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if len(head) < HEADER.size:
        return "shorter than its header"
    off0, max_el, count, per_el, label_off, data_off, maxlevel, enter, maxM, maxM0, M, mult, _efc = HEADER.unpack(head)
    links0 = maxM0 * 4 + 4
    layout_ok = (
        off0 == 0
        and 1 <= M <= 4096
        and maxM == M
        and maxM0 == 2 * M
        and data_off == links0
        and label_off == data_off + dim * 4
        and per_el == label_off + 8
        and count <= max_el
        and math.isfinite(mult)
        and mult > 0
    )
    if not layout_ok:
        return "damaged (bad header)"
    if count and not (0 <= maxlevel < 64 and enter < count):
        return "damaged (bad header)"
    if size < HEADER.size + count * (per_el + 4):
        return "truncated"
    return None


def header_count(file: Path) -> int:
    """The element count the saved index claims (0 when it has none)."""
    try:
        with open(file, "rb") as fh:
            head = fh.read(HEADER.size)
    except OSError:
        return 0
    return int(HEADER.unpack(head)[2]) if len(head) == HEADER.size else 0


class AnnCache:
    """The in-memory graph (None until first needed) and its file. Callers hold the store's index lock."""

    def __init__(self, file: Path, dim: int, *, M: int, ef_construction: int, threads: int) -> None:
        self.file = file
        self.dim = dim
        self.M = M
        self.ef_construction = ef_construction
        self.threads = threads
        self.index: Any = None
        self.dirty = False
        self.problem: str | None = None  # why the file could not be used on the last load

    def _new(self, capacity: int) -> Any:
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

    def _read(self) -> Any:
        """The saved index, or None (with ``problem`` set) when it is missing or unusable."""
        import hnswlib  # type: ignore[import-untyped]

        self.problem = header_problem(self.file, self.dim)
        if self.problem is not None:
            return None
        count = header_count(self.file)
        index = hnswlib.Index(space="ip", dim=self.dim)
        try:
            index.load_index(str(self.file), max_elements=max(int(count * 1.25), 1024), allow_replace_deleted=True)
        except (RuntimeError, ValueError, MemoryError) as e:
            self.problem = f"unreadable ({e})"
            return None
        return index

    def forget(self, slots: Iterable[int]) -> None:
        for s in slots:
            try:
                self.index.mark_deleted(int(s))
            except RuntimeError:  # not in the graph, or deleted already
                continue
            self.dirty = True

    def add(self, vecs: np.ndarray, labels: np.ndarray) -> None:
        if len(labels) == 0:
            return
        index = self.index
        need = index.get_current_count() + len(labels)
        if need > index.get_max_elements():
            index.resize_index(max(need, int(index.get_max_elements() * 1.5)))
        index.add_items(vecs, labels, num_threads=self.threads, replace_deleted=True)
        self.dirty = True

    def ensure(self, live_slots: np.ndarray, next_slot: int, V: np.ndarray, *, rebuild: bool = True) -> int:
        """Load (or build) the graph and catch it up with the live slots; returns how many
        vectors had to be added (all of them when the file was missing or unusable). Without
        ``rebuild``, an unusable file leaves ``index`` None (and ``problem`` set) and returns 0."""
        if self.index is not None:
            return 0
        index = self._read()
        have = np.array(index.get_ids_list() if index is not None else [], dtype=np.int64)
        if index is not None and len(have) and int(have.max()) >= next_slot:
            # labels SQLite never committed (SQLite lost its last transactions, e.g. on power
            # loss, after the index was saved): those slots will be handed out again, so the
            # graph cannot be patched -- rebuild it
            index, self.problem = None, "ahead of the database"
        if index is None and not rebuild:
            return 0
        if index is not None:
            self.index = index
            self.dirty = False
            self.forget(np.setdiff1d(have, live_slots, assume_unique=True).tolist())
            missing = np.setdiff1d(live_slots, have, assume_unique=True)
        else:
            self.index = self._new(int(len(live_slots) * 1.25) + 1)
            missing = live_slots
            self.dirty = True
        self.add_slots(missing, V)
        return len(missing)

    def add_slots(self, slots: np.ndarray, V: np.ndarray, step: int = 100_000) -> None:
        for i in range(0, len(slots), step):
            part = slots[i : i + step]
            self.add(np.ascontiguousarray(V[part]), part)

    def save(self) -> bool:
        """Write the graph atomically (temporary file, fsync, rename) when it changed."""
        if self.index is None or not self.dirty:
            return False
        tmp = self.file.with_name(self.file.name + ".tmp")
        self.index.save_index(str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.file)
        try:
            dfd = os.open(self.file.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:  # pragma: no cover - directories cannot be fsync-ed everywhere
            pass
        self.dirty = False
        self.problem = None
        return True
