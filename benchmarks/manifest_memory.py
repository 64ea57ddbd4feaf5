"""Resident memory while ingesting a Parquet manifest: it must stay flat, whatever the row count.

    python benchmarks/manifest_memory.py                    # 70k rows, a tiny 48-d encoder
    python benchmarks/manifest_memory.py --rows 20000 --model offline

The manifest's rows point at 512 small PNG files (28x28, as Fashion-MNIST) under distinct ids,
with a caption, a number and a list column each, so every row is decoded, encoded and stored. The
default encoder is a 4x4 colour layout (48-d, no model weights): the run measures the pipeline
(source, loader, batches, store commits), not a model. RSS is sampled from /proc/self/statm every
second; it prints the samples and the growth after the first 10 % of rows.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

import clipseek
from clipseek.encoders.base import Calibration, Encoder
from clipseek.plugins import get_registry


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class TinyEncoder(Encoder):
    """4x4 colour layout: costs microseconds, so the pipeline's own memory is what shows."""

    name = "bench-tiny"
    model_id = "benchmarks/tiny-4x4"
    dim = 48
    version = "1"
    batch_size = 32
    calibration = {"text": Calibration(0.9, 0.05), "image": Calibration(0.95, 0.02)}

    def _embed_images(self, images):  # type: ignore[no-untyped-def]
        return np.stack([np.asarray(im.convert("RGB").resize((4, 4)), np.float32).reshape(-1) / 255 + 0.05 for im in images])

    def _embed_texts(self, texts):  # type: ignore[no-untyped-def]
        return np.ones((len(texts), 48), np.float32)


class _Plugin:
    @clipseek.hookimpl
    def register_encoders(self, register):  # type: ignore[no-untyped-def]
        register(TinyEncoder)


def write_manifest(root: Path, rows: int) -> Path:
    rng = np.random.default_rng(0)
    img_dir = root / "img"
    img_dir.mkdir()
    for i in range(512):
        Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(img_dir / f"{i}.png")
    path = root / "manifest.parquet"
    writer = None
    for start in range(0, rows, 10_000):
        ids = range(start, min(rows, start + 10_000))
        t = pa.table(
            {
                "id": [f"row-{i}" for i in ids],
                "image": [f"img/{i % 512}.png" for i in ids],
                "caption": [f"picture number {i}" for i in ids],
                "n": list(ids),
                "tags": [["a", str(i % 7)] for i in ids],
            }
        )
        writer = writer or pq.ParquetWriter(path, t.schema)
        writer.write_table(t, row_group_size=5_000)
    assert writer is not None
    writer.close()
    return path


def refs(root: Path, rows: int):  # type: ignore[no-untyped-def]
    from clipseek.types import ImageRef

    for i in range(rows):
        p = (root / "img" / f"{i % 512}.png").resolve()
        meta = {"caption": f"picture number {i}", "n": i, "tags": ["a", str(i % 7)], "path": str(p), "file_name": p.name}
        yield ImageRef(id=f"row-{i}", path=p, metadata=meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=70_000)
    ap.add_argument("--model", default="bench-tiny", help="encoder name (bench-tiny, offline ...)")
    ap.add_argument(
        "--refs",
        action="store_true",
        help="feed the same items as a generator of ImageRefs instead of the manifest: the growth "
        "both runs share belongs to the pipeline and the store (its id map, vectors, ANN index)",
    )
    args = ap.parse_args()
    get_registry().register_plugin(_Plugin(), name="benchmarks.tiny")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        man = write_manifest(root, args.rows)
        samples: list[tuple[float, int, float]] = []
        done = 0

        def progress(n: int) -> None:
            nonlocal done
            done += n

        stop = threading.Event()
        t0 = time.perf_counter()

        def sample() -> None:
            while not stop.wait(1.0):
                samples.append((time.perf_counter() - t0, done, rss_mb()))

        with clipseek.Engine(root / "data") as eng:
            col = eng.create("m", model=args.model)
            col.encoder.embed_images([Image.new("RGB", (28, 28))])  # model load is not ingest
            start_rss = rss_mb()
            th = threading.Thread(target=sample, daemon=True)
            t0 = time.perf_counter()
            th.start()
            target = refs(root, args.rows) if args.refs else man
            rep = col.index(target, on_progress=progress)
            stop.set()
            th.join()
            wall = time.perf_counter() - t0
            count = col.count()
        for s, n, r in samples:
            print(f"  {s:6.1f}s  {n:>7} rows  RSS {r:7.1f} MB")
        after_warmup = [r for _, n, r in samples if n >= args.rows // 10]
        print(
            json.dumps(
                {
                    "rows": args.rows,
                    "stored": count,
                    "failed": len(rep.failed),
                    "seconds": round(wall, 1),
                    "rows_per_second": round(args.rows / wall, 1),
                    "rss_before_mb": round(start_rss, 1),
                    "rss_at_10pct_mb": round(after_warmup[0], 1) if after_warmup else None,
                    "rss_peak_mb": round(max(r for _, _, r in samples), 1) if samples else None,
                    "rss_end_mb": round(samples[-1][2], 1) if samples else None,
                }
            )
        )


if __name__ == "__main__":
    main()
