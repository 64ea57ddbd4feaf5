"""The local store's promises beyond the contract: a long-lived reader follows a writer, the ANN
cache is repaired by writers and checked cheaply, and damaged files give clear errors."""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from clipseek import filters
from clipseek.errors import ClipseekError, CollectionDamaged
from clipseek.stores.local import LocalStore
from clipseek.stores.local.ann import HEADER, header_problem
from clipseek.types import Record

DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def recs(n: int, seed: int = 0, prefix: str = "r", start: int = 0) -> list[Record]:
    x = unit(np.random.default_rng(seed).standard_normal((n, DIM)))
    return [Record(f"{prefix}{start + i:05d}", x[i], {"i": start + i, "tag": f"t{(start + i) % 3}"}) for i in range(n)]


# ------------------------------------------------------------------------------ readers follow writers


@pytest.mark.parametrize("exact_below", [100_000, 0])
def test_long_lived_reader_follows_writes(tmp_path: Path, exact_below: int) -> None:
    path = tmp_path / "s"
    writer = LocalStore(path, DIM, exact_below=exact_below)
    first = recs(300)
    writer.upsert(first)
    writer.flush()
    reader = LocalStore(path, DIM, read_only=True, exact_below=exact_below)
    try:
        assert reader.search(first[5].vector, 2)[0].id == "r00005"  # the graph (if any) is loaded now
        assert reader.count(filters.parse({"tag": "t1"})) == 100  # and the tag column
        more = recs(500, seed=1, start=300)
        for k in range(0, 500, 100):  # several commits while the reader stays open
            writer.upsert(more[k : k + 100])
            if k < 200:  # appends only: the reader reads just the new slots
                assert reader.count() == 400 + k
                assert reader.search(more[k + 99].vector, 1)[0].id == f"r{399 + k:05d}"
        moved = Record("r00007", unit(-first[7].vector), {"i": 7, "tag": "moved"})
        writer.upsert([moved])
        writer.delete(["r00008", "r00700"])
        # get and search(like=) of records the reader never saw: no IndexError, right vectors
        got = reader.get(["r00799", "r00007", "r00008"])
        np.testing.assert_allclose(got[0].vector, more[499].vector, atol=1e-6)
        np.testing.assert_allclose(got[1].vector, moved.vector, atol=1e-6)
        assert got[1].metadata["tag"] == "moved" and got[2] is None
        hits = reader.search(got[0].vector, 2, exclude=["r00799"])
        assert len(hits) == 2 and "r00799" not in [h.id for h in hits]
        assert reader.search(moved.vector, 1)[0].id == "r00007"  # the updated record is found
        assert reader.search(first[8].vector, 1)[0].id != "r00008"  # the deleted one is gone
        assert reader.count() == 798
        assert reader.count(filters.parse({"tag": "moved"})) == 1
        assert (
            reader.count(filters.parse({"tag": "t2"})) == 266 - 1
        )  # 266 of 800 ids, r00008 (t2) deleted; r00700 and r00007 were t1
        writer.update_metadata({"r00010": {"tag": "relabelled"}})
        assert [h.id for h in reader.search(first[10].vector, 1, where=filters.parse({"tag": "relabelled"}))] == [
            "r00010"
        ]
    finally:
        reader.close()
        writer.close()


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from clipseek.stores.local import LocalStore
    from clipseek.types import Record
    st = LocalStore(sys.argv[1], 32, exact_below=0)
    x = np.random.default_rng(7).standard_normal((200, 32)).astype(np.float32)
    for line in sys.stdin:
        k = int(line)
        st.upsert([Record(f"w{k:03d}-{j}", x[j], {"k": k}) for j in range(50)] + [Record("r00001", x[k], {"k": k})])
        print("done", flush=True)
    st.close()
    """
)


def test_reader_follows_a_writer_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with LocalStore(path, DIM, exact_below=0) as st:
        st.upsert(recs(200))
    script = tmp_path / "w.py"
    script.write_text(WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    reader = LocalStore(path, DIM, read_only=True, exact_below=0)
    try:
        assert reader.search(recs(200)[3].vector, 1)[0].id == "r00003"
        x = unit(np.random.default_rng(7).standard_normal((200, DIM)))
        for k in range(1, 4):
            proc.stdin.write(f"{k}\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "done"
            assert reader.count() == 200 + 50 * k
            rec = reader.get(["r00001"])[0]
            np.testing.assert_allclose(rec.vector, x[k], atol=1e-6)
            assert rec.metadata == {"k": k}
            hits = reader.search(x[k], 2)
            assert len(hits) == 2 and hits[0].id == "r00001"
            assert [h.id for h in reader.search(x[0], k)] == [f"w{j:03d}-0" for j in range(1, k + 1)]
    finally:
        reader.close()
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()


# ------------------------------------------------------------------------------ the ANN cache


def _make_index(path: Path, n: int = 300) -> list[Record]:
    rs = recs(n)
    with LocalStore(path, DIM, exact_below=0) as st:
        st.upsert(rs)
        assert st.search(rs[0].vector, 1)[0].id == "r00000"
    return rs


def test_damaged_header_is_caught_before_hnswlib(tmp_path: Path) -> None:
    path = tmp_path / "s"
    rs = _make_index(path)
    f = path / "hnsw.bin"
    assert header_problem(f, DIM) is None
    data = bytearray(f.read_bytes())
    data[8:16] = struct.pack("<Q", 1 << 60)  # max_elements: hnswlib would try to allocate it
    data[16:24] = struct.pack("<Q", 1 << 59)  # cur_element_count
    f.write_bytes(bytes(data))
    assert header_problem(f, DIM) == "truncated"
    data[: HEADER.size] = os.urandom(HEADER.size)
    f.write_bytes(bytes(data))
    assert header_problem(f, DIM) == "damaged (bad header)"
    t0 = time.perf_counter()
    with LocalStore(path, DIM, exact_below=0) as st:  # a writer rebuilds it and saves it on close
        assert st.search(rs[9].vector, 1)[0].id == "r00009"
    assert time.perf_counter() - t0 < 5
    assert header_problem(f, DIM) is None


def test_writer_saves_a_damaged_or_lagging_index_without_searching(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _make_index(path)
    f = path / "hnsw.bin"
    # a writer that only adds (never searches): its close brings the saved index up to date
    with LocalStore(path, DIM, exact_below=0) as st:
        st.upsert(recs(20, seed=3, prefix="n"))
    with LocalStore(path, DIM, exact_below=0) as st:
        st.search(recs(20, seed=3, prefix="n")[4].vector, 1)
        assert not st._index_dirty  # nothing to catch up: the file covered every record
    f.write_bytes(f.read_bytes()[:1000])  # truncated: a writer open + close repairs it
    with LocalStore(path, DIM, exact_below=0) as st:
        st.count()
    assert header_problem(f, DIM) is None
    with LocalStore(path, DIM, exact_below=0) as st:
        st.search(recs(1)[0].vector, 1)
        assert not st._index_dirty


def test_reader_scans_exactly_when_the_index_is_unusable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s"
    rs = _make_index(path)
    (path / "hnsw.bin").write_bytes(os.urandom(4000))
    with caplog.at_level(logging.WARNING, logger="clipseek"):
        with LocalStore(path, DIM, read_only=True, exact_below=0) as ro:
            assert ro.search(rs[2].vector, 1)[0].id == "r00002"
            assert ro._index is None  # it answered with the exact scan instead of rebuilding
    assert [r.getMessage() for r in caplog.records] == [
        f"{path / 'hnsw.bin'}: the saved index is damaged (bad header); searches scan every vector until it is "
        "rebuilt: run `clipseek repair`"
    ]


# ------------------------------------------------------------------------------ damaged files


def _store(path: Path, n: int = 50) -> list[Record]:
    rs = recs(n)
    with LocalStore(path, DIM) as st:
        st.upsert(rs)
    return rs


def test_zero_byte_database_is_not_taken_for_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _store(path)
    (path / "store.sqlite").write_bytes(b"")
    for ro in (False, True):
        with pytest.raises(
            CollectionDamaged, match=r"store\.sqlite is empty or missing but vectors\.f32 holds vectors"
        ):
            LocalStore(path, DIM, read_only=ro)


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_corrupt_database_names_the_file(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "s"
    _store(path, 2000)
    db = path / "store.sqlite"
    data = db.read_bytes()
    db.write_bytes(os.urandom(len(data)) if damage == "random" else data[: len(data) // 3])
    for ro in (False, True):
        try:
            st = LocalStore(path, DIM, read_only=ro)
        except CollectionDamaged as e:
            assert str(db) in str(e)
            continue
        try:  # a truncation SQLite only notices on reading pages: check reports it
            report = st.check()
            assert not report["ok"] and report["problems"][0]["file"] == str(db)
        finally:
            st.close()


def test_missing_vector_file(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _store(path)
    (path / "vectors.f32").unlink()
    for ro in (False, True):
        with pytest.raises(CollectionDamaged, match=r"vectors\.f32 is missing but the store holds 50 records"):
            LocalStore(path, DIM, read_only=ro)
    assert not (path / "vectors.f32").exists()  # the writer did not create an empty one


def test_store_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("x")
    for ro in (False, True):
        with pytest.raises(CollectionDamaged, match="should be the store's folder but is a file"):
            LocalStore(tmp_path / "s", DIM, read_only=ro)


def test_random_bytes_in_vectors_are_detected_checked_and_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "s"
    rs = _store(path, 300)
    with open(path / "vectors.f32", "r+b") as fh:  # rows 10 and 11 overwritten
        fh.seek(10 * DIM * 4)
        fh.write(np.full(2 * DIM, 3e18, np.float32).tobytes())
    with LocalStore(path, DIM, read_only=True) as ro:
        with pytest.raises(CollectionDamaged, match=r"vectors\.f32: the stored vectors of r00010, r00011 are damaged"):
            ro.search(np.ones(DIM), 3)  # the damaged rows would score ~1e20
        with pytest.raises(CollectionDamaged, match="r00010"):
            ro.get(["r00010"])
        assert ro.get(["r00012"])[0].id == "r00012"
        report = ro.check()
    assert not report["ok"]
    assert [p["ids"] for p in report["problems"]] == [["r00010", "r00011"]]
    with LocalStore(path, DIM) as st:
        rep = st.repair()
        assert rep["set_aside"] == ["r00010", "r00011"] and rep["records"] == 298
        hits = st.search(np.ones(DIM), 3)
        assert len(hits) == 3 and all(abs(h.cosine) <= 1.0001 for h in hits) and "r00010" not in [h.id for h in hits]
        report = st.check()
        assert (
            report["problems"][0]["ids"] == ["r00010", "r00011"]
            and "await re-indexing" in report["problems"][0]["problem"]
        )
        st.upsert([rs[10], rs[11]])  # re-indexed: nothing left to report
        assert st.check() == {"ok": True, "records": 300, "problems": []}


def test_check_sees_a_lagging_index_and_a_writer_clears_it(tmp_path: Path) -> None:
    path = tmp_path / "s"
    rs = _make_index(path)
    with LocalStore(path, DIM, read_only=True, exact_below=0) as ro:
        assert ro.check() == {"ok": True, "records": 300, "problems": []}
    import sqlite3

    def set_state(sql: str) -> None:
        con = sqlite3.connect(path / "store.sqlite")
        con.execute(sql)
        con.commit()
        con.close()

    set_state("UPDATE meta SET value='0:0' WHERE key='ann_state'")  # as if a writer died after 300 upserts
    with LocalStore(path, DIM, read_only=True, exact_below=0) as ro:
        assert [p["problem"] for p in ro.check()["problems"]] == ["the ANN index is behind the database"]
    with LocalStore(path, DIM, exact_below=0) as st:  # a writer's close records the state again
        assert st.count() == 300
    with LocalStore(path, DIM, read_only=True, exact_below=0) as ro:
        assert ro.check()["ok"]
    set_state("DELETE FROM meta WHERE key='ann_state'")  # a collection written before ann_state: not flagged
    with LocalStore(path, DIM, read_only=True, exact_below=0) as ro:
        assert ro.check()["ok"] and ro.search(rs[1].vector, 1)[0].id == "r00001"
    with LocalStore(path, DIM, exact_below=0) as st:
        st.count()
    with LocalStore(path, DIM) as st:
        assert st._ann_recorded() == "300:300"


def test_unopenable_database_names_the_file(tmp_path: Path) -> None:
    # root ignores chmod, so make the database impossible to open another way: a folder in its place
    path = tmp_path / "s"
    _store(path)
    db = path / "store.sqlite"
    db.unlink()
    (path / "vectors.f32").unlink()
    db.mkdir()
    with pytest.raises(
        ClipseekError,
        match=r"store\.sqlite: cannot open \(unable to open database file\); check that .* and writable by you",
    ):
        LocalStore(path, DIM)


def test_truncated_vector_file_is_repaired_into_a_list_of_ids(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _store(path, 300)
    with open(path / "vectors.f32", "r+b") as fh:
        fh.truncate(100 * DIM * 4)
    with pytest.raises(
        CollectionDamaged, match=r"vectors\.f32 is shorter than the records need .* run `clipseek repair`"
    ):
        LocalStore(path, DIM, read_only=True)
    with LocalStore(path, DIM) as st:
        rep = st.repair()
    assert rep["set_aside"] == [f"r{i:05d}" for i in range(100, 300)] and rep["records"] == 100
    with LocalStore(path, DIM, read_only=True) as ro:
        report = ro.check()
        assert report["problems"][0]["ids"] == rep["set_aside"] and ro.count() == 100
        assert ro.search(recs(300)[50].vector, 1)[0].id == "r00050"
