"""Benchmark of ``clipseek dedup`` (near-duplicate groups via the store's own search).

    python benchmarks/dedup_bench.py --n 20000
    python benchmarks/dedup_bench.py --n 100000

Synthetic data in a ``local`` store: ``n`` 512-d unit vectors, of which about 30% are planted
near-duplicate groups (2-5 copies of a random vector with small noise: cosine about 0.98 to it)
and the rest random vectors (pairwise cosine about 0, never duplicates). Prints the time of
:func:`clipseek.dedup.near_duplicates` at threshold 0.9 and how many planted groups were found
exactly (same members, nothing else).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from clipseek.dedup import near_duplicates
from clipseek.stores.local import LocalStore
from clipseek.types import Record

DIM = 512


def build(path: Path, n: int, seed: int = 0) -> list[set[str]]:
    rng = np.random.default_rng(seed)
    planted: list[set[str]] = []
    vecs, ids = [], []
    while len(ids) < n:
        base = rng.standard_normal(DIM).astype(np.float32)
        base /= np.linalg.norm(base)
        if rng.random() < 0.12 and n - len(ids) >= 5:
            size = int(rng.integers(2, 6))
            group = set()
            for _ in range(size):
                v = base + rng.standard_normal(DIM).astype(np.float32) * 0.2 / np.sqrt(DIM)
                ids.append(f"r{len(ids):07d}")
                vecs.append(v)
                group.add(ids[-1])
            planted.append(group)
        else:
            ids.append(f"r{len(ids):07d}")
            vecs.append(base)
    st = LocalStore(path, DIM)
    for i in range(0, n, 10_000):
        st.upsert([Record(ids[j], vecs[j], {"path": f"/pics/{ids[j]}.jpg"}) for j in range(i, min(n, i + 10_000))])
    st.close()
    return planted


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--neighbours", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        planted = build(Path(tmp) / "s", args.n)
        t_build = time.perf_counter() - t0
        st = LocalStore(Path(tmp) / "s", DIM, read_only=True)
        t0 = time.perf_counter()
        groups = near_duplicates(st, args.threshold, neighbours=args.neighbours)
        took = time.perf_counter() - t0
        found = {frozenset(m.id for m in g.members) for g in groups}
        exact = sum(1 for p in planted if frozenset(p) in found)
        print(
            json.dumps(
                {
                    "n": args.n,
                    "threshold": args.threshold,
                    "neighbours": args.neighbours,
                    "planted_groups": len(planted),
                    "groups_found": len(groups),
                    "planted_found_exactly": exact,
                    "build_s": round(t_build, 1),
                    "dedup_s": round(took, 2),
                    "records_per_s": round(args.n / took),
                    "load_avg": os.getloadavg()[0],
                }
            )
        )


if __name__ == "__main__":
    main()
