"""Benchmark of the embedded ``local`` store (SQLite + mmap'd vectors + hnswlib) against exact scans,
and of the ``milvus`` store beside it (``--milvus``).

    python benchmarks/store_bench.py --n 100000 --queries 1000
    python benchmarks/store_bench.py --n 1000000 --queries 200
    python benchmarks/store_bench.py --n 100000 --queries 300 --milvus      # starts a Milvus 2.3 server (the `milvus` wheel)
    python benchmarks/store_bench.py --n 100000 --milvus --milvus-uri http://127.0.0.1:19530 --skip-memory

Synthetic data: ``n`` clustered 512-d unit vectors (1000 random centres, Gaussian
noise of norm 0.8 around each centre), with
metadata ``camera`` (100 values), ``ts`` (a number: epoch seconds over one year) and ``labels`` (a
list of 1-3 of 20 words). Queries come from the same distribution. Filters: none, ~10% of rows
(``camera in`` 10 cameras), 1% (one camera), ~0.5% and ~0.1% of rows (``ts`` ranges). Ground truth
is an exact numpy scan computed chunk by chunk from the regenerated data.

With ``--milvus``: ``milvus-build`` upserts the same records through the Milvus store (batches of
10k), then flushes and waits until the HNSW index covers every row; ``milvus-query`` measures
latency and recall per filter on the store's default route and with every query forced through the
graph (``exact_rows=0``), the latency of the strong (default) and bounded consistency levels, and
the server's resident memory (VmRSS, and VmHWM, its peak) when the benchmark started the server.

Each phase runs in its own process so that its peak RSS (``resource.getrusage``) is its own:
``build`` (upserts in batches of 10k, then flush = index build + save), ``truth``, ``query`` (open,
first search, latency and recall per filter) and ``memory`` (the reference MemoryStore exact scan).
Figures depend on the BLAS setting: this machine exports ``OPENBLAS_CORETYPE=Haswell``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

DIM = 512
CHUNK = 10_000
CENTRES = 1000
T0 = 1_704_067_200.0  # 2024-01-01
YEAR = 365 * 86400.0
SPREAD = 0.8  # noise norm relative to the centre: top-1 cosine about 0.65, top-10 about 0.63
WORDS = [f"w{i:02d}" for i in range(20)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _centres() -> np.ndarray:
    c = np.random.default_rng(12345).standard_normal((CENTRES, DIM)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def _sample(rng: np.random.Generator, k: int, centres: np.ndarray) -> np.ndarray:
    x = centres[rng.integers(0, CENTRES, k)] + SPREAD * rng.standard_normal((k, DIM)).astype(np.float32) / np.sqrt(DIM)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def chunks(n: int) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, list[list[str]]]]:
    """(start, vectors, camera index, ts, labels) for rows start..start+CHUNK, deterministic."""
    centres = _centres()
    for start in range(0, n, CHUNK):
        k = min(CHUNK, n - start)
        rng = np.random.default_rng(start + 1)
        x = _sample(rng, k, centres)
        cam = rng.integers(0, 100, k)
        ts = T0 + rng.uniform(0, YEAR, k)
        nl = rng.integers(1, 4, k)
        lab = rng.integers(0, len(WORDS), (k, 3))
        labels = [[WORDS[w] for w in lab[i, : nl[i]]] for i in range(k)]
        yield start, x, cam, ts, labels


def queries(q: int) -> np.ndarray:
    return _sample(np.random.default_rng(999), q, _centres())


FILTERS: dict[str, Any] = {
    "none": None,
    "10%": {"camera": {"in": [f"cam-{i:02d}" for i in range(0, 100, 10)]}},
    "1%": {"camera": "cam-07"},
    "0.5%": {"ts": {"gte": T0 + 0.40 * YEAR, "lt": T0 + 0.405 * YEAR}},
    "0.1%": {"ts": {"gte": T0 + 0.60 * YEAR, "lt": T0 + 0.601 * YEAR}},
}


def numpy_mask(name: str, cam: np.ndarray, ts: np.ndarray) -> np.ndarray:
    if name == "none":
        return np.ones(len(cam), dtype=bool)
    if name == "10%":
        return cam % 10 == 0
    if name == "1%":
        return cam == 7
    if name == "0.5%":
        return (ts >= T0 + 0.40 * YEAR) & (ts < T0 + 0.405 * YEAR)
    return (ts >= T0 + 0.60 * YEAR) & (ts < T0 + 0.601 * YEAR)


def disk_bytes(path: Path) -> int:
    total = 0
    for p in path.iterdir():
        st = p.stat()
        total += min(st.st_size, st.st_blocks * 512)
    return total


# ------------------------------------------------------------------------------------------ phases


def phase_build(a: argparse.Namespace) -> dict[str, Any]:
    from clipseek.stores.local import LocalStore
    from clipseek.types import Record

    st = LocalStore(a.path, DIM, ef_search=a.ef)
    t = time.perf_counter()
    for start, x, cam, ts, labels in chunks(a.n):
        st.upsert(
            [
                Record(
                    f"img-{start + i:08d}",
                    x[i],
                    {"camera": f"cam-{cam[i]:02d}", "ts": float(ts[i]), "labels": labels[i]},
                )
                for i in range(len(x))
            ]
        )
    t_upsert = time.perf_counter() - t
    t = time.perf_counter()
    st.flush()  # builds the hnswlib index (n >= exact_below) and saves it
    t_index = time.perf_counter() - t
    t = time.perf_counter()
    st.close()
    t_close = time.perf_counter() - t
    return {
        "upsert_s": round(t_upsert, 1),
        "upsert_per_s": round(a.n / t_upsert),
        "index_build_and_save_s": round(t_index, 1),
        "close_s": round(t_close, 2),
        "build_total_s": round(t_upsert + t_index + t_close, 1),
        "disk_mb": round(disk_bytes(Path(a.path)) / 1e6),
        "files_mb": {p.name: round(p.stat().st_size / 1e6, 1) for p in Path(a.path).iterdir()},
        "peak_rss_mb": round(peak_rss_mb()),
    }


def phase_truth(a: argparse.Namespace) -> dict[str, Any]:
    Q = queries(a.queries)
    k = 10
    best = {f: (np.full((len(Q), k), -np.inf, np.float32), np.zeros((len(Q), k), np.int64)) for f in FILTERS}
    for start, x, cam, ts, _labels in chunks(a.n):
        S = Q @ x.T  # (q, chunk)
        for f in FILTERS:
            m = numpy_mask(f, cam, ts)
            s = np.where(m[None, :], S, -np.inf)
            sc, ix = best[f]
            allsc = np.concatenate([sc, s], axis=1)
            allix = np.concatenate([ix, np.broadcast_to(np.arange(start, start + len(x)), s.shape)], axis=1)
            top = np.argpartition(-allsc, k - 1, axis=1)[:, :k]
            best[f] = (np.take_along_axis(allsc, top, 1), np.take_along_axis(allix, top, 1))
    np.savez(a.truth, **{f: best[f][1] for f in FILTERS})
    return {"peak_rss_mb": round(peak_rss_mb())}


def _lat(ts: list[float]) -> dict[str, float]:
    arr = np.array(ts) * 1000
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p99_ms": round(float(np.percentile(arr, 99)), 3),
    }


def phase_query(a: argparse.Namespace) -> dict[str, Any]:
    from clipseek import filters
    from clipseek.stores.local import LocalStore

    truth = np.load(a.truth)
    Q = queries(a.queries)
    t = time.perf_counter()
    st = LocalStore(a.path, DIM, ef_search=a.ef)
    out: dict[str, Any] = {"open_s": round(time.perf_counter() - t, 3)}
    t = time.perf_counter()
    st.search(Q[0], 10)
    out["first_search_s (loads hnsw.bin)"] = round(time.perf_counter() - t, 3)
    for f, spec in FILTERS.items():
        conds = filters.parse(spec) if spec else []
        if conds:
            t = time.perf_counter()
            st.count(conds)
            out[f"first_filter_{f}_s (loads columns)"] = round(time.perf_counter() - t, 3)
        modes = [("auto", st.filtered_exact_fraction, st.exact_below)]
        if conds:  # the other path too, to show where the crossover lies
            modes.append(("forced-exact", 1.0, st.exact_below))
            modes.append(("forced-hnsw", 0.0, 0))
        for mode, frac, eb in modes:
            st.filtered_exact_fraction, st.exact_below = frac, eb
            lat, hit, nq = [], 0, len(Q) if mode == "auto" else min(len(Q), 200)
            for j in range(nq):
                t = time.perf_counter()
                hits = st.search(Q[j], 10, where=conds)
                lat.append(time.perf_counter() - t)
                got = {int(h.id[4:]) for h in hits}
                hit += len(got & set(truth[f][j].tolist()))
            out[f"filter {f} [{mode}]"] = {**_lat(lat), "recall@10": round(hit / (10 * nq), 4), "queries": nq}
        st.filtered_exact_fraction, st.exact_below = 0.02, 20_000
    out["matching_rows"] = {f: st.count(filters.parse(s)) if s else st.count() for f, s in FILTERS.items()}
    out["peak_rss_mb"] = round(peak_rss_mb())
    st.close()
    return out


def phase_memory(a: argparse.Namespace) -> dict[str, Any]:
    from clipseek import filters
    from clipseek.stores.memory import MemoryStore
    from clipseek.types import Record

    truth = np.load(a.truth)
    Q = queries(a.queries)
    st = MemoryStore(None, DIM)
    t = time.perf_counter()
    batch: list[Record] = []
    for start, x, cam, ts, labels in chunks(a.n):
        batch.extend(
            [
                Record(
                    f"img-{start + i:08d}",
                    x[i],
                    {"camera": f"cam-{cam[i]:02d}", "ts": float(ts[i]), "labels": labels[i]},
                )
                for i in range(len(x))
            ]
        )
        if len(batch) >= 100_000:  # MemoryStore copies its whole matrix on every call
            st.upsert(batch)
            batch = []
    st.upsert(batch)
    out: dict[str, Any] = {"upsert_s": round(time.perf_counter() - t, 1)}
    for f, spec in FILTERS.items():
        conds = filters.parse(spec) if spec else []
        nq = min(len(Q), 100 if not conds else (20 if a.n <= 200_000 else 2))
        lat, hit = [], 0
        for j in range(nq):
            t = time.perf_counter()
            hits = st.search(Q[j], 10, where=conds)
            lat.append(time.perf_counter() - t)
            hit += len({int(h.id[4:]) for h in hits} & set(truth[f][j].tolist()))
        out[f"filter {f}"] = {**_lat(lat), "recall@10": round(hit / (10 * nq), 4), "queries": nq}
    out["peak_rss_mb"] = round(peak_rss_mb())
    return out


def _server_memory(pid: int | None) -> dict[str, Any]:
    """The Milvus server's resident memory now and at its peak (its own process only)."""
    if not pid:
        return {"server_rss_mb": "n/a (server not started by the benchmark)"}
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {
        "server_rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024),
        "server_peak_rss_mb": round(int(fields["VmHWM"].split()[0]) / 1024),
    }


def _milvus(a: argparse.Namespace, **options: Any) -> Any:
    from clipseek.stores.milvus import MilvusStore

    return MilvusStore(Path(a.path).parent / "milvus-store", DIM, uri=a.milvus_uri, prefix="bench_", timeout=600, **options)


def phase_milvus_build(a: argparse.Namespace) -> dict[str, Any]:
    from pymilvus import utility

    from clipseek.types import Record

    st = _milvus(a)
    out: dict[str, Any] = {"collection": st.collection_name}
    t = time.perf_counter()
    for start, x, cam, ts, labels in chunks(a.n):
        st.upsert(
            [
                Record(f"img-{start + i:08d}", x[i], {"camera": f"cam-{cam[i]:02d}", "ts": float(ts[i]), "labels": labels[i]})
                for i in range(len(x))
            ]
        )
    t_upsert = time.perf_counter() - t
    out.update(upsert_s=round(t_upsert, 1), upsert_per_s=round(a.n / t_upsert))
    out.update({f"after upsert {k}": v for k, v in _server_memory(a.milvus_pid).items()})
    t = time.perf_counter()
    st._col.flush(timeout=600)
    utility.wait_for_index_building_complete(st.collection_name, using=st._alias, timeout=7200)
    st._col.load(timeout=600)
    out["flush_and_index_s"] = round(time.perf_counter() - t, 1)
    out.update(_server_memory(a.milvus_pid))
    out["client_peak_rss_mb"] = round(peak_rss_mb())
    st.close()
    return out


def phase_milvus_query(a: argparse.Namespace) -> dict[str, Any]:
    from clipseek import filters

    truth = np.load(a.truth)
    Q = queries(a.queries)
    t = time.perf_counter()
    st = _milvus(a)
    out: dict[str, Any] = {"open_s": round(time.perf_counter() - t, 3)}
    default_rows = st.exact_rows
    for f, spec in FILTERS.items():
        conds = filters.parse(spec) if spec else []
        for mode, rows in (("auto", default_rows), ("forced-hnsw", 0)):
            if mode == "forced-hnsw" and not conds:
                continue
            st.exact_rows = rows
            lat, hit, nq = [], 0, len(Q) if mode == "auto" else min(len(Q), 100)
            for j in range(nq):
                t = time.perf_counter()
                hits = st.search(Q[j], 10, where=conds)
                lat.append(time.perf_counter() - t)
                hit += len({int(h.id[4:]) for h in hits} & set(truth[f][j].tolist()))
            out[f"filter {f} [{mode}]"] = {**_lat(lat), "recall@10": round(hit / (10 * nq), 4), "queries": nq}
    st.exact_rows = default_rows
    st.close()
    for level in ("strong", "bounded"):  # the cost of reading every write that returned before
        st = _milvus(a, consistency=level)
        lat = []
        for j in range(min(len(Q), 100)):
            t = time.perf_counter()
            st.search(Q[j], 10)
            lat.append(time.perf_counter() - t)
        out[f"consistency {level} (no filter)"] = _lat(lat)
        st.close()
    st = _milvus(a)
    out["matching_rows"] = {f: st.count(filters.parse(s)) if s else st.count() for f, s in FILTERS.items()}
    st.close()
    out.update(_server_memory(a.milvus_pid))
    return out


# ------------------------------------------------------------------------------------------ driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--ef", type=int, default=128, help="ef_search of the local store")
    ap.add_argument("--dir", default=None, help="where to build the store (default: a temp dir, removed after)")
    ap.add_argument("--skip-memory", action="store_true", help="skip the MemoryStore comparison")
    ap.add_argument("--skip-local", action="store_true", help="skip the local store (with --milvus: Milvus alone)")
    ap.add_argument("--milvus", action="store_true", help="also benchmark the milvus store")
    ap.add_argument("--milvus-uri", help="an existing server (default: start one from the `milvus` wheel in the temp dir)")
    ap.add_argument("--milvus-pid", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--phase", choices=["build", "truth", "query", "memory", "milvus-build", "milvus-query"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--truth", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.phase:
        fn = {
            "build": phase_build, "truth": phase_truth, "query": phase_query, "memory": phase_memory,
            "milvus-build": phase_milvus_build, "milvus-query": phase_milvus_query,
        }[a.phase]
        print(json.dumps(fn(a)))
        return

    base = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="store_bench_"))
    base.mkdir(parents=True, exist_ok=True)
    path, truth = base / "store", base / "truth.npz"
    if path.exists():
        shutil.rmtree(path)
    print(
        f"# local store benchmark: n={a.n:,} dim={DIM} queries={a.queries} k=10 ef_search={a.ef} "
        f"cpus={os.cpu_count()} OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}",
        flush=True,
    )
    phases = ["truth"] + ([] if a.skip_local else ["build", "query"]) + ([] if a.skip_memory else ["memory"])
    server = None
    if a.milvus:
        phases += ["milvus-build", "milvus-query"]
        if not a.milvus_uri:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from _milvus_server import MilvusProcess  # the tests' launcher: same settings as CI's server

            server = MilvusProcess(base / "milvus-server", port=0)
            a.milvus_uri = server.start()
            assert server.proc is not None
            a.milvus_pid = server.proc.pid
            print(f"# milvus server {a.milvus_uri} (pid {a.milvus_pid}, settings {server.settings})", flush=True)
    try:
        for ph in phases:
            cmd = [
                sys.executable,
                __file__,
                "--phase",
                ph,
                "--n",
                str(a.n),
                "--queries",
                str(a.queries),
                "--ef",
                str(a.ef),
                "--path",
                str(path),
                "--truth",
                str(truth),
            ] + (["--milvus-uri", a.milvus_uri, "--milvus-pid", str(a.milvus_pid)] if a.milvus else [])
            t = time.perf_counter()
            res = subprocess.run(cmd, check=True, capture_output=True, text=True)
            data = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"\n## {ph} ({time.perf_counter() - t:.0f} s wall)")
            for k, v in data.items():
                print(f"  {k}: {v}")
            sys.stdout.flush()
    finally:
        if server is not None:
            server.stop()
        if not a.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
