"""The embedded store candidates, measured side by side on the data of ``store_bench.py``.

    python benchmarks/store_candidates.py --n 100000 --queries 500
    python benchmarks/store_candidates.py --n 1000000 --queries 200 --only lancedb --no-crash

Candidates (each one optional; a missing package is reported with its install hint and skipped):

``local``    clipseek's ``LocalStore`` (SQLite + mmap'd vectors + hnswlib), ef_search 128.
``lancedb``  LanceDB, embedded (``pip install lancedb``): one table (string ``id``, ``vector``,
             ``camera``, ``ts``, ``labels``), an ANN index of its own (``--lance-index``, IVF_PQ by
             default, searched with ``nprobes`` and a ``refine_factor`` that re-ranks on the raw
             vectors) and scalar indexes (BITMAP on ``camera``, BTREE on ``ts`` and ``id``);
             filters are SQL ``where`` clauses applied before the vector search (``prefilter``).
``qdrant``   Qdrant Edge, the embedded Rust Qdrant (``pip install qdrant-edge-py``): cosine
             vectors, HNSW m=16 ef_construct=128, payload indexes on ``camera`` (keyword) and ``ts``
             (float), searched with hnsw_ef 128.

The data, queries, filters and ground truth are ``store_bench.py``'s (imported): ``n`` clustered
512-d unit vectors, ``camera`` (100 values), ``ts`` (epoch seconds over a year), ``labels`` (1-3
words); filters "10%" (``camera in`` 10 cameras) and "0.5%" (a ``ts`` range); ground truth from an
exact numpy scan. Every result a candidate returns carries its id and metadata (what clipseek
needs to show a hit), so the latencies include each client's result conversion.

Phases, each in its own process so its peak RSS (``ru_maxrss``) is its own:

``build``   ingest in calls of 10k records, then build the candidate's indexes; time, disk, RSS.
``query``   open, first search, then p50/p99 latency and recall@10 per filter.
``delete``  delete 1% of the ids (every 100th row) in one call, then search with the deleted
            vectors themselves and with the benchmark queries: no deleted id may come back; then
            close, reopen and check again.
``crash``   a writer process appends calls of 500 records (every 4th call followed by the
            candidate's maintenance step: ``flush()`` / ``optimize()``) and prints each committed
            call; it is SIGKILLed at a random moment. A fresh process then reopens the store and
            reports whether it opens, the count, whether the rows are exactly whole calls in order,
            whether every record's vector and metadata are intact, whether every call the writer
            had seen return is there, and whether the store takes another write. SIGKILL tests a
            process dying, not power loss: the page cache survives it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import store_bench as sb  # noqa: E402  (the data generator, filters and ground truth)

K = 10
CRASH_BATCH = 500
CRASH_MAX_BATCHES = 200
CAND_NAMES = ("local", "lancedb", "qdrant")
INSTALL = {
    "local": "pip install -e . (clipseek itself) and hnswlib",
    "lancedb": "pip install lancedb",
    "qdrant": "pip install qdrant-edge-py",
}
CAMS_10 = [f"cam-{i:02d}" for i in range(0, 100, 10)]
TS_LO, TS_HI = sb.T0 + 0.40 * sb.YEAR, sb.T0 + 0.405 * sb.YEAR


def rid(row: int) -> str:
    return f"img-{row:08d}"


def rows_of(ids: list[Any]) -> list[int]:
    return [int(i[4:]) if isinstance(i, str) else int(i) for i in ids]


def available(name: str) -> str | None:
    """None if the candidate's package imports, else the reason."""
    try:
        if name == "local":
            import clipseek.stores.local  # noqa: F401
        elif name == "lancedb":
            import lancedb  # noqa: F401
            import pyarrow  # noqa: F401
        elif name == "qdrant":
            import qdrant_edge  # noqa: F401
    except ImportError as e:
        return f"{e} -- install with: {INSTALL[name]}"
    return None


# ------------------------------------------------------------------------------------ candidates


class LocalCand:
    name = "local"
    filtered_modes = ("auto",)

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.st: Any = None

    def open(self, path: Path) -> None:
        from clipseek.stores.local import LocalStore

        self.st = LocalStore(path, sb.DIM, ef_search=self.a.ef)

    create = open

    def add(self, start: int, x: np.ndarray, cam: np.ndarray, ts: np.ndarray, labels: list[list[str]]) -> None:
        from clipseek.types import Record

        self.st.upsert(
            [
                Record(rid(start + i), x[i], {"camera": f"cam-{cam[i]:02d}", "ts": float(ts[i]), "labels": labels[i]})
                for i in range(len(x))
            ]
        )

    def build_index(self) -> dict[str, float]:
        t = time.perf_counter()
        self.st.flush()  # builds the hnswlib graph and saves it
        return {"hnsw_build_and_save_s": time.perf_counter() - t}

    def maintain(self) -> None:
        self.st.flush()

    def prepare_queries(self) -> None:
        from clipseek import filters

        self.conds = {f: (filters.parse(s) if s else []) for f, s in sb.FILTERS.items()}

    def search(self, q: np.ndarray, f: str, mode: str = "auto") -> list[int]:
        return rows_of([h.id for h in self.st.search(q, K, where=self.conds[f])])

    def delete(self, rows: list[int]) -> None:
        self.st.delete([rid(r) for r in rows])

    def count(self) -> int:
        return self.st.count()

    def dump(self) -> dict[int, tuple[np.ndarray, dict[str, Any]]]:
        ids = self.st.ids()
        return {int(r.id[4:]): (r.vector, r.metadata) for r in self.st.get(ids) if r is not None}

    def close(self) -> None:
        self.st.close()


class LanceCand:
    name = "lancedb"
    # "index": the filter is applied before the ANN index search (prefilter=True, LanceDB's default);
    # "flat": bypass_vector_index(), an exact scan over the rows the filter keeps
    filtered_modes = ("index", "flat")

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.tbl: Any = None
        self.path: Path | None = None

    def _schema(self) -> Any:
        import pyarrow as pa

        return pa.schema(
            [
                pa.field("id", pa.string()),
                pa.field("vector", pa.list_(pa.float32(), sb.DIM)),
                pa.field("camera", pa.string()),
                pa.field("ts", pa.float64()),
                pa.field("labels", pa.list_(pa.string())),
            ]
        )

    def create(self, path: Path) -> None:
        import lancedb

        self.db = lancedb.connect(str(path))
        self.tbl = self.db.create_table("images", schema=self._schema())

    def open(self, path: Path) -> None:
        import lancedb

        self.db = lancedb.connect(str(path))
        self.tbl = self.db.open_table("images")

    def add(self, start: int, x: np.ndarray, cam: np.ndarray, ts: np.ndarray, labels: list[list[str]]) -> None:
        import pyarrow as pa

        k = len(x)
        batch = pa.table(
            {
                "id": pa.array([rid(start + i) for i in range(k)], pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.ascontiguousarray(x, np.float32).ravel()), sb.DIM
                ),
                "camera": pa.array([f"cam-{c:02d}" for c in cam], pa.string()),
                "ts": pa.array(ts.astype(np.float64)),
                "labels": pa.array(labels, pa.list_(pa.string())),
            },
            schema=self._schema(),
        )
        self.tbl.add(batch)

    def build_index(self) -> dict[str, float]:
        a = self.a
        out: dict[str, float] = {}
        t = time.perf_counter()
        kw: dict[str, Any] = {"metric": "cosine", "index_type": a.lance_index, "num_partitions": a.lance_partitions}
        if a.lance_index == "IVF_PQ":
            kw["num_sub_vectors"] = a.lance_subvectors
        self.tbl.create_index(**kw)
        out["vector_index_s"] = time.perf_counter() - t
        t = time.perf_counter()
        self.tbl.create_scalar_index("camera", index_type="BITMAP")
        self.tbl.create_scalar_index("ts", index_type="BTREE")
        self.tbl.create_scalar_index("id", index_type="BTREE")
        out["scalar_indexes_s"] = time.perf_counter() - t
        return out

    def maintain(self) -> None:
        self.tbl.optimize()  # compacts fragments, updates indexes, prunes old versions (>7 days)

    def prepare_queries(self) -> None:
        cams = ", ".join(f"'{c}'" for c in CAMS_10)
        self.where = {"none": None, "10%": f"camera IN ({cams})", "0.5%": f"ts >= {TS_LO!r} AND ts < {TS_HI!r}"}

    def search(self, q: np.ndarray, f: str, mode: str = "index") -> list[int]:
        a = self.a
        b = self.tbl.search(q).distance_type("cosine").limit(K).select(["id", "camera", "ts", "labels"])
        if mode == "flat":
            b = b.bypass_vector_index()
        elif a.lance_index.startswith("IVF"):
            b = b.nprobes(a.lance_nprobes)
        if "HNSW" in a.lance_index and mode != "flat":
            b = b.ef(a.lance_ef)
        if a.lance_refine and mode != "flat":
            b = b.refine_factor(a.lance_refine)
        if self.where[f]:
            b = b.where(self.where[f], prefilter=True)
        return rows_of(b.to_arrow().column("id").to_pylist())

    def delete(self, rows: list[int]) -> None:
        ids = ", ".join(f"'{rid(r)}'" for r in rows)
        self.tbl.delete(f"id IN ({ids})")

    def count(self) -> int:
        return int(self.tbl.count_rows())

    def dump(self) -> dict[int, tuple[np.ndarray, dict[str, Any]]]:
        t = self.tbl.to_arrow()
        vec = np.asarray(t.column("vector").combine_chunks().flatten(), np.float32).reshape(-1, sb.DIM)
        out = {}
        for i, (id_, cam, ts, lab) in enumerate(
            zip(
                t.column("id").to_pylist(),
                t.column("camera").to_pylist(),
                t.column("ts").to_pylist(),
                t.column("labels").to_pylist(),
            )
        ):
            out[int(id_[4:])] = (vec[i], {"camera": cam, "ts": ts, "labels": lab})
        return out

    def close(self) -> None:
        self.tbl = None
        self.db = None


class QdrantCand:
    name = "qdrant"
    # "auto": Qdrant's planner picks filtered HNSW or a payload-index scan per query (hnsw_ef);
    # "exact": SearchParams(exact=True), a scan over the rows the filter keeps;
    # "acorn": filtered HNSW with ACORN (also walks two-hop neighbours of filtered-out nodes)
    filtered_modes = ("auto", "exact", "acorn")

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.sh: Any = None

    def create(self, path: Path) -> None:
        import qdrant_edge as qe

        cfg = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=sb.DIM, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=128, full_scan_threshold=10_000),
        )
        self.sh = qe.EdgeShard.create(str(path), cfg)
        self.sh.update(qe.UpdateOperation.create_field_index("camera", qe.PayloadSchemaType.Keyword))
        self.sh.update(qe.UpdateOperation.create_field_index("ts", qe.PayloadSchemaType.Float))

    def open(self, path: Path) -> None:
        import qdrant_edge as qe

        self.sh = qe.EdgeShard.load(str(path))

    def add(self, start: int, x: np.ndarray, cam: np.ndarray, ts: np.ndarray, labels: list[list[str]]) -> None:
        import qdrant_edge as qe

        pts = [
            qe.Point(
                start + i,
                x[i].tolist(),
                {"id": rid(start + i), "camera": f"cam-{cam[i]:02d}", "ts": float(ts[i]), "labels": labels[i]},
            )
            for i in range(len(x))
        ]
        self.sh.update(qe.UpdateOperation.upsert_points(pts))

    def build_index(self) -> dict[str, float]:
        t = time.perf_counter()
        self.sh.optimize()  # builds the HNSW segments
        t1 = time.perf_counter()
        self.sh.flush()
        return {"optimize_s": t1 - t, "flush_s": time.perf_counter() - t1}

    def maintain(self) -> None:
        self.sh.flush()
        self.sh.optimize()

    def prepare_queries(self) -> None:
        import qdrant_edge as qe

        self.qe = qe
        self.filt = {
            "none": None,
            "10%": qe.Filter(must=[qe.FieldCondition("camera", match=qe.MatchAny(CAMS_10))]),
            "0.5%": qe.Filter(must=[qe.FieldCondition("ts", range=qe.RangeFloat(gte=TS_LO, lt=TS_HI))]),
        }
        self.params = {
            "auto": qe.SearchParams(hnsw_ef=self.a.ef),
            "exact": qe.SearchParams(exact=True),
            "acorn": qe.SearchParams(hnsw_ef=self.a.ef, acorn=qe.AcornSearchParams(enable=True)),
        }

    def search(self, q: np.ndarray, f: str, mode: str = "auto") -> list[int]:
        qe = self.qe
        req = qe.QueryRequest(
            limit=K,
            query=qe.Query.Nearest(q.tolist()),
            filter=self.filt[f],
            with_payload=True,
            params=self.params[mode],
        )
        return [int(p.id) for p in self.sh.query(req)]

    def delete(self, rows: list[int]) -> None:
        import qdrant_edge as qe

        self.sh.update(qe.UpdateOperation.delete_points([int(r) for r in rows]))

    def count(self) -> int:
        import qdrant_edge as qe

        return int(self.sh.count(qe.CountRequest(exact=True)))

    def dump(self) -> dict[int, tuple[np.ndarray, dict[str, Any]]]:
        recs = self.sh.retrieve(list(range(CRASH_BATCH * CRASH_MAX_BATCHES)), with_payload=True, with_vector=True)
        out = {}
        for r in recs:
            v = r.vector
            if isinstance(v, dict):
                v = v.get("", next(iter(v.values())))
            p = dict(r.payload or {})
            p.pop("id", None)
            out[int(r.id)] = (np.asarray(v, np.float32), p)
        return out

    def close(self) -> None:
        self.sh.close()
        self.sh = None


CANDS = {"local": LocalCand, "lancedb": LanceCand, "qdrant": QdrantCand}


# ------------------------------------------------------------------------------------------ phases


def _lat(ts: list[float]) -> dict[str, float]:
    arr = np.array(ts) * 1000
    return {"p50_ms": round(float(np.percentile(arr, 50)), 3), "p99_ms": round(float(np.percentile(arr, 99)), 3)}


def phase_build(a: argparse.Namespace) -> dict[str, Any]:
    c = CANDS[a.cand](a)
    path = Path(a.path)
    t0 = time.perf_counter()
    c.create(path)
    for start, x, cam, ts, labels in sb.chunks(a.n):
        c.add(start, x, cam, ts, labels)
    t_ingest = time.perf_counter() - t0
    idx = c.build_index()
    t = time.perf_counter()
    c.close()
    t_close = time.perf_counter() - t
    return {
        "ingest_s (calls of 10k)": round(t_ingest, 1),
        **{k: round(v, 1) for k, v in idx.items()},
        "close_s": round(t_close, 2),
        "build_total_s": round(time.perf_counter() - t0, 1),
        "disk_mb": round(du(path) / 1e6),
        "peak_rss_mb": round(sb.peak_rss_mb()),
    }


def du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(root, f))
            total += min(st.st_size, st.st_blocks * 512)
    return total


def phase_query(a: argparse.Namespace) -> dict[str, Any]:
    truth = np.load(a.truth)
    Q = sb.queries(a.queries)
    c = CANDS[a.cand](a)
    t = time.perf_counter()
    c.open(Path(a.path))
    c.prepare_queries()
    out: dict[str, Any] = {"open_s": round(time.perf_counter() - t, 3)}
    t = time.perf_counter()
    c.search(Q[0], "none")
    out["first_search_s"] = round(time.perf_counter() - t, 3)
    for f in sb.FILTERS:
        for mode in c.filtered_modes if f != "none" else c.filtered_modes[:1]:
            c.search(Q[1], f, mode)  # warm whatever this filter loads
            lat, hit = [], 0
            nq = len(Q) if mode == c.filtered_modes[0] else min(len(Q), a.other_mode_queries)
            for j in range(nq):
                t = time.perf_counter()
                got = c.search(Q[j], f, mode)
                lat.append(time.perf_counter() - t)
                hit += len(set(got) & set(truth[f][j].tolist()))
            out[f"filter {f} [{mode}]"] = {**_lat(lat), "recall@10": round(hit / (K * nq), 4), "queries": nq}
    out["count"] = c.count()
    out["peak_rss_mb"] = round(sb.peak_rss_mb())
    c.close()
    return out


def _deleted_rows(n: int) -> list[int]:
    return list(range(7, n, 100))  # 1% of the rows


def _vectors_of(rows: list[int], n: int) -> np.ndarray:
    want = set(rows)
    out = {}
    for start, x, _cam, _ts, _labels in sb.chunks(n):
        for r in range(start, start + len(x)):
            if r in want:
                out[r] = x[r - start]
    return np.stack([out[r] for r in rows])


def _leak_check(c: Any, dq: np.ndarray, Q: np.ndarray, dead: set[int]) -> dict[str, Any]:
    leaks_self = sum(len(set(c.search(v, "none")) & dead) for v in dq)
    leaks_q = {f: sum(len(set(c.search(q, f)) & dead) for q in Q) for f in sb.FILTERS}
    return {
        "deleted ids returned (deleted vectors as queries)": leaks_self,
        "deleted ids returned (queries, per filter)": leaks_q,
    }


def phase_delete(a: argparse.Namespace) -> dict[str, Any]:
    rows = _deleted_rows(a.n)
    dead = set(rows)
    dq = _vectors_of(rows[:200], a.n)
    Q = sb.queries(min(a.queries, 200))
    c = CANDS[a.cand](a)
    c.open(Path(a.path))
    c.prepare_queries()
    before = c.count()
    t = time.perf_counter()
    c.delete(rows)
    out: dict[str, Any] = {"deleted": len(rows), "delete_call_s": round(time.perf_counter() - t, 3)}
    out["count before/after"] = [before, c.count()]
    out["same process"] = _leak_check(c, dq, Q, dead)
    c.close()
    c = CANDS[a.cand](a)
    c.open(Path(a.path))
    c.prepare_queries()
    out["after reopen"] = {"count": c.count(), **_leak_check(c, dq, Q, dead)}
    c.close()
    return out


def phase_crashwriter(a: argparse.Namespace) -> dict[str, Any]:
    c = CANDS[a.cand](a)
    c.create(Path(a.path))
    b = 0
    for start, x, cam, ts, labels in sb.chunks(CRASH_BATCH * CRASH_MAX_BATCHES):
        for s in range(0, len(x), CRASH_BATCH):
            sl = slice(s, s + CRASH_BATCH)
            c.add(start + s, x[sl], cam[sl], ts[sl], labels[sl])
            b += 1
            print(f"committed {b}", flush=True)
            if b % 4 == 0:
                print(f"maintaining {b}", flush=True)
                c.maintain()
                print(f"maintained {b}", flush=True)
    c.close()
    return {"finished": b}


def phase_crashcheck(a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    c = CANDS[a.cand](a)
    try:
        c.open(Path(a.path))
    except Exception as e:  # report, don't hide
        out["opens"] = False
        out["open_error"] = f"{type(e).__name__}: {e}"[:400]
        return out
    out["opens"] = True
    try:
        n = c.count()
        data = c.dump()
        out["count"] = n
        out["whole_calls"] = n % CRASH_BATCH == 0
        rows = sorted(data)
        out["rows_are_a_prefix"] = rows == list(range(len(rows))) and len(rows) == n
        exp = {}
        for start, x, cam, ts, labels in sb.chunks(CRASH_BATCH * CRASH_MAX_BATCHES):
            for i in range(len(x)):
                exp[start + i] = (x[i], {"camera": f"cam-{cam[i]:02d}", "ts": float(ts[i]), "labels": labels[i]})
        bad, ts_ulp = [], 0
        for r in rows:
            if r not in exp or not np.allclose(data[r][0], exp[r][0], atol=1e-5):
                bad.append(r)
                continue
            got, want = dict(data[r][1]), dict(exp[r][1])
            gts, wts = got.pop("ts", None), want.pop("ts")
            if got != want or not isinstance(gts, float) or abs(gts - wts) > 1e-12 * abs(wts):
                bad.append(r)
            elif gts != wts:
                ts_ulp += 1  # came back, but not bit-exact
        out["records_intact"] = not bad
        if bad:
            out["first_bad"] = bad[:5]
        if ts_ulp:
            out["ts_not_bit_exact (within 1e-12)"] = ts_ulp
        out["committed_seen_by_writer"] = a.seen
        out["all_acknowledged_calls_present"] = n >= a.seen * CRASH_BATCH
        # does it take another write?
        nxt = CRASH_BATCH * CRASH_MAX_BATCHES
        for start, x, cam, ts, labels in sb.chunks(nxt + CRASH_BATCH):
            if start + len(x) > nxt:
                s = nxt - start
                c.add(
                    nxt,
                    x[s : s + CRASH_BATCH],
                    cam[s : s + CRASH_BATCH],
                    ts[s : s + CRASH_BATCH],
                    labels[s : s + CRASH_BATCH],
                )
        out["count_after_one_more_call"] = c.count()
        c.close()
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"[:400]
        out["traceback_tail"] = traceback.format_exc().splitlines()[-3:]
    return out


def crash_trials(a: argparse.Namespace, base: Path, cand: str) -> list[dict[str, Any]]:
    """Run the writer, SIGKILL it at a random moment, then reopen in a fresh process."""
    rng = random.Random(a.seed)
    results = []
    for trial in range(a.crash_trials):
        path = base / f"crash-{cand}-{trial}"
        shutil.rmtree(path, ignore_errors=True)
        target = rng.randint(3, 60)  # committed calls before the kill window opens
        extra = rng.uniform(0.0, 0.3)  # seconds into the following work
        cmd = _phase_cmd(a, "crashwriter", cand, path)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen, killed_after, last = 0, "", ""
        assert p.stdout is not None
        t0 = time.perf_counter()
        for line in p.stdout:
            last = line.strip()
            if line.startswith("committed "):
                seen = int(line.split()[1])
            if seen >= target:
                time.sleep(extra)
                p.send_signal(signal.SIGKILL)
                killed_after = f"{time.perf_counter() - t0:.2f} s, {extra:.2f} s after call {target} returned"
                break
        rest = p.stdout.read()  # lines printed before the kill landed
        for line in rest.splitlines():
            last = line.strip()
            if line.startswith("committed "):
                seen = int(line.split()[1])
        rc = p.wait()
        during = (
            f"maintenance after call {last.split()[1]}" if last.startswith("maintaining") else f"write call {seen + 1}"
        )
        res = {
            "trial": trial,
            "killed": killed_after or "writer ended before the kill",
            "during": during,
            "writer_rc": rc,
        }
        chk = subprocess.run(
            _phase_cmd(a, "crashcheck", cand, path) + ["--seen", str(seen)], capture_output=True, text=True
        )
        if chk.returncode != 0:
            res["check_failed"] = chk.stderr.strip().splitlines()[-3:]
        else:
            res.update(json.loads(chk.stdout.strip().splitlines()[-1]))
        results.append(res)
        shutil.rmtree(path, ignore_errors=True)
    return results


# ------------------------------------------------------------------------------------------ driver

PHASES = {
    "build": phase_build,
    "query": phase_query,
    "delete": phase_delete,
    "crashwriter": phase_crashwriter,
    "crashcheck": phase_crashcheck,
}


def _phase_cmd(a: argparse.Namespace, phase: str, cand: str, path: Path) -> list[str]:
    return [
        sys.executable, __file__, "--phase", phase, "--cand", cand, "--path", str(path), "--truth", str(a.truth),
        "--n", str(a.n), "--queries", str(a.queries), "--ef", str(a.ef),
        "--lance-index", a.lance_index, "--lance-partitions", str(a.lance_partitions),
        "--lance-subvectors", str(a.lance_subvectors), "--lance-nprobes", str(a.lance_nprobes),
        "--lance-refine", str(a.lance_refine), "--lance-ef", str(a.lance_ef),
        "--other-mode-queries", str(a.other_mode_queries),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--only", default=",".join(CAND_NAMES), help="comma-separated: local,lancedb,qdrant")
    ap.add_argument("--ef", type=int, default=128, help="ef_search for local and qdrant (hnsw_ef)")
    ap.add_argument("--lance-index", default="IVF_PQ", choices=["IVF_PQ", "IVF_HNSW_SQ", "IVF_FLAT"])
    ap.add_argument("--lance-partitions", type=int, default=256)
    ap.add_argument("--lance-subvectors", type=int, default=64, help="IVF_PQ sub-vectors (512/64 = 8 dims each)")
    ap.add_argument("--lance-nprobes", type=int, default=20)
    ap.add_argument("--lance-refine", type=int, default=10, help="refine_factor: re-rank k*this on raw vectors")
    ap.add_argument("--lance-ef", type=int, default=128)
    ap.add_argument("--other-mode-queries", type=int, default=200, help="queries for the non-default modes")
    ap.add_argument("--crash-trials", type=int, default=5)
    ap.add_argument("--no-crash", action="store_true")
    ap.add_argument("--no-delete", action="store_true")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--dir", default=None, help="work dir (default: a temp dir, removed after)")
    ap.add_argument("--phase", choices=list(PHASES), help=argparse.SUPPRESS)
    ap.add_argument("--cand", choices=list(CANDS), help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--truth", help=argparse.SUPPRESS)
    ap.add_argument("--seen", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.phase:
        print(json.dumps(PHASES[a.phase](a)))
        return

    base = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="store_cand_"))
    base.mkdir(parents=True, exist_ok=True)
    a.truth = base / f"truth-{a.n}-{a.queries}.npz"
    load = os.getloadavg()
    print(
        f"# store candidates: n={a.n:,} dim={sb.DIM} queries={a.queries} k={K} cpus={os.cpu_count()} "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')} "
        f"loadavg={load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    cands = []
    for name in a.only.split(","):
        if name not in CANDS:
            ap.error(f"unknown candidate {name!r}; choose from {', '.join(CAND_NAMES)}")
        why = available(name)
        if why:
            print(f"\n## {name}: SKIPPED ({why})", flush=True)
        else:
            cands.append(name)
    try:
        if not a.truth.exists():
            t = time.perf_counter()
            ns = argparse.Namespace(n=a.n, queries=a.queries, truth=str(a.truth))
            sb.phase_truth(ns)
            print(f"\n## truth (exact numpy, {time.perf_counter() - t:.0f} s)", flush=True)
        for name in cands:
            path = base / f"store-{name}"
            shutil.rmtree(path, ignore_errors=True)
            info = ""
            if name == "lancedb":
                import lancedb

                info = (
                    f" lancedb {lancedb.__version__} {a.lance_index} partitions={a.lance_partitions} "
                    f"sub_vectors={a.lance_subvectors} nprobes={a.lance_nprobes} refine_factor={a.lance_refine}"
                    + (f" ef={a.lance_ef}" if "HNSW" in a.lance_index else "")
                )
            elif name == "qdrant":
                from importlib.metadata import version

                info = f" qdrant-edge-py {version('qdrant-edge-py')} m=16 ef_construct=128 hnsw_ef={a.ef}"
            else:
                info = f" M=16 ef_construction=128 ef_search={a.ef}"
            print(f"\n## {name}{info}", flush=True)
            phases = ["build", "query"] + ([] if a.no_delete else ["delete"])
            for ph in phases:
                t = time.perf_counter()
                res = subprocess.run(_phase_cmd(a, ph, name, path), capture_output=True, text=True)
                if res.returncode != 0:
                    print(f"  {ph}: FAILED rc={res.returncode}: {res.stderr.strip()[-1500:]}", flush=True)
                    break
                data = json.loads(res.stdout.strip().splitlines()[-1])
                print(f"  [{ph}, {time.perf_counter() - t:.0f} s wall, loadavg {os.getloadavg()[0]:.2f}]")
                for k, v in data.items():
                    print(f"    {k}: {v}")
                sys.stdout.flush()
            shutil.rmtree(path, ignore_errors=True)
            if not a.no_crash:
                print(f"  [crash: {a.crash_trials} trials, calls of {CRASH_BATCH}, SIGKILL at a random moment]")
                for r in crash_trials(a, base, name):
                    print(f"    {r}")
                sys.stdout.flush()
    finally:
        if not a.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
