"""A long-lived reader's in-memory graph beyond tests/test_store_local.py: it keeps the records
it had and gains the writer's, it uses a graph a writer saved after the reader opened, and it
retries the saved graph once a writer has replaced an unusable one; and it notices a vector
file truncated under the records it catches up with."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from clipseek.errors import CollectionDamaged
from clipseek.stores.local import LocalStore
from clipseek.types import Record

DIM = 16


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


X = unit(np.random.default_rng(3).standard_normal((400, DIM)))


def recs(lo: int, hi: int) -> list[Record]:
    return [Record(f"r{i:05d}", X[i], {"i": i}) for i in range(lo, hi)]


def test_reader_graph_keeps_its_records_and_gains_the_writers(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with LocalStore(path, DIM, exact_below=0) as writer:
        writer.upsert(recs(0, 300))
        writer.flush()
        with LocalStore(path, DIM, read_only=True, exact_below=0) as reader:
            assert reader.search(X[5], 1)[0].id == "r00005"
            assert reader.stats()["hnsw_loaded"] is True
            writer.upsert(recs(300, 400))
            writer.delete(["r00006"])
            for i in (5, 7, 250, 350, 399):  # old and new records, on the caught-up graph
                assert reader.search(X[i], 1)[0].id == f"r{i:05d}"
            assert "r00006" not in [h.id for h in reader.search(X[6], 5)]
            assert reader.count() == 399


def test_reader_that_catches_up_before_its_first_search_loads_the_saved_graph(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with LocalStore(path, DIM, exact_below=0) as writer:
        writer.upsert(recs(0, 300))
        writer.flush()
        with LocalStore(path, DIM, read_only=True, exact_below=0) as reader:
            writer.upsert(recs(300, 310))
            assert reader.search(X[305], 1)[0].id == "r00305"
            assert reader.stats()["hnsw_loaded"] is True


def test_reader_retries_the_graph_after_a_writer_replaced_an_unusable_one(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with LocalStore(path, DIM, exact_below=0) as writer:
        writer.upsert(recs(0, 300))
    (path / "hnsw.bin").write_bytes(os.urandom(4000))
    with LocalStore(path, DIM, read_only=True, exact_below=0) as reader:
        assert reader.search(X[1], 1)[0].id == "r00001"
        assert reader.stats()["hnsw_loaded"] is False  # refused: exact scans
        with LocalStore(path, DIM, exact_below=0) as writer:
            writer.flush()  # rebuilds and saves the graph, and records what it covers
        assert reader.search(X[2], 1)[0].id == "r00002"
        assert reader.stats()["hnsw_loaded"] is True


def test_reader_catching_up_sees_a_vector_file_truncated_under_new_records(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with LocalStore(path, DIM) as writer:
        writer.upsert(recs(0, 300))
        with LocalStore(path, DIM, read_only=True) as reader:
            assert reader.count() == 300
            writer.upsert(recs(300, 350))  # slots 300..349
            with open(path / "vectors.f32", "r+b") as fh:
                fh.truncate(320 * DIM * 4)
            with pytest.raises(CollectionDamaged, match=r"vectors\.f32 is shorter than the records need \(the file was"):
                reader.count()
