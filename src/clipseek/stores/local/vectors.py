"""The local store's vector file: float32 rows, row ``slot`` at byte ``slot * dim * 4``,
append-only by slot, read through a read-only memory map."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

# A stored vector is unit length (every vector is normalised before it is written); a row whose
# norm is further than this from 1 was damaged on disk.
NORM_TOLERANCE = 1e-3


class VectorFile:
    def __init__(self, file: Path, dim: int, *, read_only: bool) -> None:
        self.file = file
        self.dim = dim
        self.row_bytes = dim * 4
        flags = os.O_RDONLY if read_only else os.O_RDWR | os.O_CREAT
        self.fd: int = os.open(file, flags, 0o644)
        self.rows = 0
        self._map: mmap.mmap | None = None
        self.V = np.zeros((0, dim), np.float32)
        self.remap()

    def file_rows(self) -> int:
        return os.fstat(self.fd).st_size // self.row_bytes

    def remap(self) -> None:
        """Map every whole row the file holds now (a reader catching up with a writer)."""
        self._map_rows(self.file_rows())

    def _map_rows(self, rows: int) -> None:
        """(Re)map the first ``rows`` rows of the file (which must already be that long). Arrays
        handed out earlier keep their old mapping alive until they are dropped."""
        if rows <= 0 or rows == self.rows:
            return
        mm = mmap.mmap(self.fd, rows * self.row_bytes, access=mmap.ACCESS_READ)
        self._map = mm
        self.V = np.frombuffer(mm, dtype=np.float32).reshape(rows, self.dim)
        self.rows = rows

    def ensure_rows(self, rows: int) -> None:
        """Make the file and its mapping cover ``rows`` rows (grown sparsely ahead of use)."""
        if rows <= self.rows:
            return
        new = max(rows, int(self.rows * 1.25), self.rows + max(1, (1 << 20) // self.row_bytes))
        if os.fstat(self.fd).st_size < new * self.row_bytes:
            os.ftruncate(self.fd, new * self.row_bytes)
        self._map_rows(new)

    def write(self, start: int, vecs: np.ndarray) -> None:
        """Write rows from ``start`` and make them durable."""
        self.ensure_rows(start + len(vecs))
        os.pwrite(self.fd, np.ascontiguousarray(vecs, dtype=np.float32).tobytes(), start * self.row_bytes)
        if hasattr(os, "fdatasync"):
            os.fdatasync(self.fd)
        else:  # pragma: no cover
            os.fsync(self.fd)

    def damaged(self, slots: np.ndarray, chunk: int = 65_536) -> np.ndarray:
        """The slots among ``slots`` whose stored vector is not a finite unit vector."""
        bad: list[np.ndarray] = []
        V = self.V
        for i in range(0, len(slots), chunk):
            part = slots[i : i + chunk]
            with np.errstate(all="ignore"):
                norms = np.sqrt(np.einsum("ij,ij->i", V[part], V[part], dtype=np.float64))
            bad.append(part[~(np.abs(norms - 1.0) <= NORM_TOLERANCE)])  # NaN/inf fail too
        return np.concatenate(bad) if bad else slots[:0]

    def close(self) -> None:
        self.V = np.zeros((0, self.dim), np.float32)
        self._map = None  # the mapping closes when the last array using it is gone
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
