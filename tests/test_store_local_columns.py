"""The local store's filter columns beyond the contract: a column that mostly holds atoms of
retired slots is compacted, and answers exactly as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clipseek import filters
from clipseek.stores.local import LocalStore
from clipseek.types import Record

DIM = 8


def test_a_column_of_mostly_retired_slots_is_compacted_and_stays_exact(tmp_path: Path) -> None:
    # 1200 records, tag "even"/"odd" by id; every id is upserted three times, so the loaded
    # column ends with 3600 atoms of which 1200 are live: it is compacted on the next filter
    n = 1200
    e = np.eye(DIM, dtype=np.float32)
    with LocalStore(tmp_path / "s", DIM) as st:
        for round_ in range(3):
            tags = ["even" if i % 2 == 0 else "odd" for i in range(n)]
            st.upsert([Record(f"r{i:04d}", e[i % DIM], {"tag": tags[i], "round": round_}) for i in range(n)])
            # the tag column is loaded after the first round and only gains atoms afterwards
            assert st.count(filters.parse({"tag": "even"})) == 600
        col = st._columns._cols["tag"]
        assert len(col.slot) == 1200 and sorted(col.slot.tolist()) == list(range(2400, 3600))
        assert st.count(filters.parse({"tag": "odd"})) == 600
        assert st.count(filters.parse({"round": 2})) == 1200
        # e[3] is the vector of ids i % 8 == 3: all odd
        hits = st.search(e[3], 5, where=filters.parse({"tag": "odd"}))
        assert [h.id for h in hits] == ["r0003", "r0011", "r0019", "r0027", "r0035"]
        assert st.search(e[3], 5, where=filters.parse({"tag": "even"}))[0].cosine == 0.0
