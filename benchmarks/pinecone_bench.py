"""Query latency of the Pinecone-compatible API through Pinecone's own client.

Starts ``clipseek serve`` on a free 127.0.0.1 port with a temporary data folder, creates a 512-d
index, upserts N random vectors (batches of 500) into the default namespace, then N more into
namespace ``b``, and times ``query(top_k=10)`` with and without a metadata filter (10% selective),
in the default namespace before and after ``b`` exists, and in ``b``. Client and server share the
machine, so the figures include both sides and the HTTP round trip.

    python benchmarks/pinecone_bench.py [--n 20000] [--reps 100]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from pinecone import Pinecone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=100)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="clipseek-pinecone-bench-"))
    port = _free_port()
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "CLIPSEEK_HOME": str(home), "PYTHONPATH": src}
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipseek", "serve", "--port", str(port), "--log-text"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        run(url, args.n, args.reps)
    finally:
        proc.terminate()
        proc.wait(30)


def run(url: str, n: int, reps: int) -> None:
    pc = Pinecone(api_key="bench", host=url + "/pinecone")
    pc.create_index(name="bench", dimension=512, metric="cosine")
    idx = pc.Index("bench")
    rng = np.random.default_rng(0)

    def load(ns: str) -> float:
        t = time.perf_counter()
        for s in range(0, n, 500):
            V = rng.normal(size=(500, 512)).astype(np.float32)
            idx.upsert(
                vectors=[{"id": f"{ns}-{s + i}", "values": V[i].tolist(), "metadata": {"cam": f"c{(s + i) % 10}"}} for i in range(500)],
                namespace=ns,
            )
        return n / (time.perf_counter() - t)

    def lat(ns: str, flt: dict | None = None) -> str:
        Q = rng.normal(size=(reps + 1, 512)).astype(np.float32)
        idx.query(vector=Q[0].tolist(), top_k=10, namespace=ns, filter=flt)
        ts = []
        for q in Q[1:]:
            t = time.perf_counter()
            idx.query(vector=q.tolist(), top_k=10, namespace=ns, filter=flt)
            ts.append((time.perf_counter() - t) * 1000)
        return f"p50 {np.percentile(ts, 50):.1f} ms, p99 {np.percentile(ts, 99):.1f} ms"

    print(f"upsert {n} into the default namespace: {load(''):.0f} vectors/s")
    print(f"query, default namespace only:            {lat('')}")
    print(f"query, default namespace, filter cam=c3:  {lat('', {'cam': 'c3'})}")
    print(f"upsert {n} into namespace b: {load('b'):.0f} vectors/s")
    print(f"query, default namespace, b exists:       {lat('')}")
    print(f"query, namespace b:                       {lat('b')}")
    print(f"query, namespace b, filter cam=c3:        {lat('b', {'cam': 'c3'})}")
    idx.close()
    pc.delete_index("bench")
    pc.close()


if __name__ == "__main__":
    main()
