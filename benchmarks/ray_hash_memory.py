"""What the stored content hashes cost an `index --ray` run, per collection size (no cluster needed).

    python benchmarks/ray_hash_memory.py                 # 1,000,000 records
    python benchmarks/ray_hash_memory.py --records 200000

Builds, for N synthetic records (ids like archive paths of 55 characters, real sha256 hex), what a
run holds: the id -> hash map the store returns (``store.values("_sha256")``), the driver's
:class:`~clipseek.ingest.ContentBook` built from it (the plain run builds the same one), and the
workers' sorted 8-byte prefixes (:func:`clipseek.ray_ingest.hash_prefixes`, what goes into Ray's
object store once per node). Resident memory is read from /proc/self/statm; multiply by 10 for
10 million records.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time

from clipseek.downloads import DownloadStage
from clipseek.ingest import CommitWindow, ContentBook, IngestReport
from clipseek.ray_ingest import hash_prefixes
from clipseek.stores.memory import MemoryStore


def rss() -> int:
    with open("/proc/self/statm") as fp:
        return int(fp.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    args = ap.parse_args()
    n = args.records
    mib = 2**20
    r0 = rss()
    hashes = {
        f"/mnt/archive/2024/cam{i % 997:03d}/capture-{i:09d}.jpg": hashlib.sha256(i.to_bytes(8, "little")).hexdigest()
        for i in range(n)
    }
    r1 = rss()
    store = MemoryStore(None, 4)
    with tempfile.TemporaryDirectory() as tmp:
        report = IngestReport()
        book = ContentBook(store, CommitWindow(store, report, DownloadStage(tmp)), hashes, "skip", lambda _: None)
        r2 = rss()
        t = time.perf_counter()
        prefixes = hash_prefixes(book.by_hash)
        seconds = time.perf_counter() - t
    out = {
        "records": n,
        "id_to_hash_MiB": round((r1 - r0) / mib),
        "content_book_MiB": round((r2 - r1) / mib),
        "worker_prefixes_MiB": round(prefixes.nbytes / mib, 1),
        "prefixes_seconds": round(seconds, 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
