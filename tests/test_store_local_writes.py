"""The local store's write bookkeeping beyond the contract: refused ids, a write that fails
inside its transaction, records set aside by repair, and a metadata update that reloads only
the filter columns of the fields it changed."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from clipseek import filters
from clipseek.errors import BadVector, ClipseekError
from clipseek.stores.local import LocalStore
from clipseek.stores.local import store as local_store
from clipseek.types import Record

DIM = 8
E = np.eye(DIM, dtype=np.float32)


@pytest.mark.parametrize("bad", ["", 5])
def test_update_metadata_refuses_ids_that_are_not_non_empty_strings(tmp_path: Path, bad: object) -> None:
    with LocalStore(tmp_path / "s", DIM) as st:
        st.upsert([Record("a", E[0], {"x": 1})])
        with pytest.raises(ClipseekError, match=re.escape(f"record ids must be non-empty strings, got {bad!r}")):
            st.update_metadata({bad: {"x": 2}, "a": {"x": 3}})  # type: ignore[dict-item]
        assert st.get(["a"])[0].metadata == {"x": 1}


@pytest.mark.parametrize("bad", ["", 5])
def test_upsert_refuses_ids_that_are_not_non_empty_strings(tmp_path: Path, bad: object) -> None:
    with LocalStore(tmp_path / "s", DIM) as st:
        with pytest.raises(ClipseekError, match=re.escape(f"record ids must be non-empty strings, got {bad!r}")):
            st.upsert([Record("a", E[0], {}), Record(bad, E[1], {})])  # type: ignore[arg-type]
        assert st.count() == 0


def test_upsert_refuses_vectors_of_mixed_lengths(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "s", DIM) as st:
        with pytest.raises(BadVector, match=r"^record vectors must all be 8-d numeric vectors: "):
            st.upsert([Record("a", E[0], {}), Record("b", np.ones(DIM + 1), {})])
        assert st.count() == 0


def test_upsert_refuses_scalars_that_would_stack_into_one_vector(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "s", DIM) as st:
        with pytest.raises(BadVector, match=re.escape("expected one 8-d vector per record, got shape (8,)")):
            st.upsert([Record(f"r{i}", np.float32(1.0), {}) for i in range(DIM)])  # type: ignore[arg-type]
        assert st.count() == 0


def test_update_metadata_reloads_only_the_columns_it_touched(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "s", DIM) as st:
        st.upsert([Record(i, E[k], {"camera": f"c{k}", "tag": "old"}) for k, i in enumerate("abc")])
        assert st.count(filters.parse({"camera": "c1"})) == 1 and st.count(filters.parse({"tag": "old"})) == 3
        assert sorted(st._columns.loaded()) == ["camera", "tag"]
        assert st.update_metadata({"b": {"tag": "new"}}) == 1
        assert st._columns.loaded() == ["camera"]  # "tag" is read again on its next use
        assert st.count(filters.parse({"tag": "new"})) == 1 and st.count(filters.parse({"tag": "old"})) == 2


@pytest.mark.parametrize("write", ["upsert", "delete", "update_metadata"])
def test_a_write_that_fails_midway_rolls_back_and_leaves_the_store_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    with LocalStore(tmp_path / "s", DIM) as st:
        st.upsert([Record("a", E[0], {"x": 1}), Record("b", E[1], {"x": 2})])
        calls: dict[str, Callable[[], object]] = {
            "upsert": lambda: st.upsert([Record("c", E[2], {"x": 3})]),
            "delete": lambda: st.delete(["a"]),
            "update_metadata": lambda: st.update_metadata({"a": {"x": 9}}),
        }

        def boom(db: object, delta: object) -> None:
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(st, "_apply_counts", boom)  # the last step before COMMIT in every write
        with pytest.raises(RuntimeError, match="disk on fire"):
            calls[write]()
        monkeypatch.undo()
        assert sorted(st.ids()) == ["a", "b"] and st.count() == 2 and st.get(["a"])[0].metadata == {"x": 1}
        calls[write]()  # no transaction was left open: the same write goes through now
        assert sorted(st.ids()) == {"upsert": ["a", "b", "c"], "delete": ["b"], "update_metadata": ["a", "b"]}[write]
    with LocalStore(tmp_path / "s", DIM) as st:
        assert st.count() == {"upsert": 3, "delete": 1, "update_metadata": 2}[write]


def test_deleting_a_set_aside_record_clears_it_from_check(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with LocalStore(path, DIM) as st:
        st.upsert([Record(f"r{i}", E[i], {}) for i in range(4)])
    with open(path / "vectors.f32", "r+b") as fh:  # r1's vector overwritten
        fh.seek(1 * DIM * 4)
        fh.write(np.full(DIM, 3e18, np.float32).tobytes())
    with LocalStore(path, DIM) as st:
        assert st.repair()["set_aside"] == ["r1"]
        assert st.check()["problems"][0]["ids"] == ["r1"]
        assert st.delete(["r1"]) == 0  # no longer a record
        assert st.check() == {"ok": True, "records": 3, "problems": []}


def test_damaged_vectors_are_named_five_at_most(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with LocalStore(path, DIM) as st:
        st.upsert([Record(f"r{i}", E[i % DIM], {}) for i in range(8)])
    with open(path / "vectors.f32", "r+b") as fh:  # r1..r6 overwritten
        fh.seek(1 * DIM * 4)
        fh.write(np.full(6 * DIM, 3e18, np.float32).tobytes())
    with LocalStore(path, DIM, read_only=True) as ro:
        message = (
            f"{path / 'vectors.f32'}: the stored vectors of r1, r2, r3, r4, r5 ... are damaged; run `clipseek check` "
            "for the full list and `clipseek repair` to set them aside for re-indexing"
        )
        with pytest.raises(ClipseekError, match=re.escape(message)):
            ro.get([f"r{i}" for i in range(8)])
        with pytest.raises(ClipseekError, match=re.escape(message.replace(", r5 ...", ", r5"))):
            ro.get(["r1", "r2", "r3", "r4", "r5"])


def test_ids_of_a_filter_matching_more_than_one_query_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_store, "IDS_CHUNK", 3)  # ids(where) reads 3 slots per query: 4 queries
    with LocalStore(tmp_path / "s", DIM) as st:
        st.upsert([Record(f"r{i:02d}", E[i % DIM], {"t": "x" if i % 5 else "y"}) for i in range(13)])
        got = st.ids(filters.parse({"t": "x"}))
        assert len(got) == 10 and sorted(got) == [f"r{i:02d}" for i in range(13) if i % 5]


def test_a_vector_file_one_row_short_is_extended_by_a_writer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s"
    with LocalStore(path, DIM) as st:
        st.upsert([Record(f"r{i}", E[i], {}) for i in range(8)])
    with open(path / "vectors.f32", "r+b") as fh:
        fh.truncate(7 * DIM * 4)  # slot 7 (r7) lost
    with caplog.at_level(logging.WARNING, logger="clipseek"):
        with LocalStore(path, DIM) as st:
            assert st.repair()["set_aside"] == ["r7"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path / 'vectors.f32'} is shorter than the records need: 1 vectors are lost; run `clipseek repair` to set "
        "those records aside for re-indexing"
    ]
