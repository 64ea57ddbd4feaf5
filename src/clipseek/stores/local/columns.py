"""The filter columns of the local store: each field's atoms as numpy arrays, and the evaluation
of a filter to a boolean mask over slots with exactly the semantics of :func:`clipseek.filters.matches`."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ... import filters
from ...filters import Atom, Condition

AtomRow = tuple[int, "str | None", "float | None", "float | None"]  # slot, s, n, t


class AtomCache:
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


class Column:
    """The atoms of one field as numpy arrays: slot, string code, number, time (NaN = none)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.slot = np.zeros(0, np.int64)
        self.code = np.zeros(0, np.int32)
        self.num = np.zeros(0, np.float64)
        self.time = np.zeros(0, np.float64)
        self.pending: list[tuple[np.ndarray, ...]] = []

    def add(self, rows: Sequence[AtomRow]) -> None:
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
            alive = live[self.slot[self.slot < len(live)]] if len(self.slot) else self.slot.astype(bool)
            if len(alive) == len(self.slot) and len(alive) > 1024 and alive.mean() < 0.5:
                # mostly atoms of retired slots: compact
                self.slot, self.code, self.num, self.time = (
                    a[alive] for a in (self.slot, self.code, self.num, self.time)
                )
        return self.slot, self.code, self.num, self.time


class Columns:
    """The loaded columns of a store. ``load(field)`` reads a field's atoms from SQLite; it runs
    under ``load_lock`` (the store's write lock) so no write slips between a load and its
    registration. Slots are never reused, so a column only ever gains atoms, except when a
    metadata-only update rewrites a slot's atoms: then the field is forgotten and reloaded."""

    def __init__(self, load: Callable[[str], list[AtomRow]], load_lock: threading.RLock) -> None:
        self._load = load
        self._load_lock = load_lock
        self._lock = threading.Lock()
        self._cols: dict[str, Column] = {}

    def _column(self, field: str) -> Column:
        col = self._cols.get(field)
        if col is None:
            with self._load_lock:
                col = self._cols.get(field)
                if col is None:
                    col = Column()
                    col.add(self._load(field))
                    self._cols[field] = col
        return col

    def add(self, atom_rows: Iterable[tuple[Any, ...]]) -> None:
        """New atoms (field, slot, k, s, n, t) for the columns already loaded."""
        if not self._cols:
            return
        by_field: dict[str, list[AtomRow]] = {}
        for f, slot, _j, s, n, t in atom_rows:
            if f in self._cols:
                by_field.setdefault(f, []).append((slot, s, n, t))
        with self._lock:
            for f, rows in by_field.items():
                self._cols[f].add(rows)

    def loaded(self) -> list[str]:
        return list(self._cols)

    def forget(self, fields: Iterable[str] | None = None) -> None:
        """Drop the named columns (all when None); they are reloaded on next use."""
        with self._lock:
            if fields is None:
                self._cols = {}
            else:
                for f in fields:
                    self._cols.pop(f, None)

    def mask(self, where: Sequence[Condition], live: np.ndarray, counts: Mapping[str, int]) -> np.ndarray:
        """Boolean mask over slots of the live records matching every condition."""
        filters.check_fields(where, counts)
        # Bounds were validated when the filter was parsed; a hand-built Condition with a bad bound
        # still fails below (eq_targets / _range_key raise the same BadFilter).
        mask = live.copy()
        for c in where:
            col = self._column(c.field)
            with self._lock:
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
