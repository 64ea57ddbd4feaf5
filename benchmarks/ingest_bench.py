"""Ingest rate, end to end (files on disk -> decode -> offline model -> local store), and CPU use.

    python benchmarks/ingest_bench.py                 # the sample photos + 10k Fashion-MNIST images
    python benchmarks/ingest_bench.py --fmnist 2000   # a smaller Fashion-MNIST subset

CPU use is (user + system CPU seconds) / wall seconds: 2.0 means both cores busy all the time.
Fashion-MNIST comes from Debian's `dataset-fashion-mnist` (apt-get install dataset-fashion-mnist).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import clipseek
from clipseek.demo import sample_refs

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_fmnist(n: int) -> np.ndarray:
    cands = sorted(FMNIST_DIR.rglob("*train-images*"))
    if not cands:
        raise SystemExit(f"Fashion-MNIST not found under {FMNIST_DIR}: apt-get install dataset-fashion-mnist")
    raw = gzip.open(cands[0]).read() if cands[0].suffix == ".gz" else cands[0].read_bytes()
    imgs = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    return imgs[:n]


def timed_index(engine: clipseek.Engine, name: str, target) -> dict:  # type: ignore[no-untyped-def]
    col = engine.create(name)
    col.encoder.embed_texts(["warm up"])  # model load is not ingest
    col.encoder.embed_images([Image.new("RGB", (64, 64))])
    c0, t0 = cpu_seconds(), time.perf_counter()
    rep = col.index(target)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    return {
        "images": rep.embedded,
        "failed": len(rep.failed),
        "seconds": round(wall, 2),
        "images_per_second": round(rep.embedded / wall, 1),
        "cpu_cores_busy": round(cpu / wall, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fmnist", type=int, default=10000, help="Fashion-MNIST images to index (0: skip)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="clipseek-ingest-"))
    out = {"cpu_count": os.cpu_count(), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    try:
        with clipseek.Engine(tmp / "data") as eng:
            photos = tmp / "photos"
            photos.mkdir()
            for ref in sample_refs():
                shutil.copy(ref.path, photos / ref.path.name)
            out["sample_photos"] = timed_index(eng, "samples", photos)
            print("sample photos:", out["sample_photos"])
            if args.fmnist:
                d = tmp / "fmnist"
                d.mkdir()
                for i, a in enumerate(load_fmnist(args.fmnist)):
                    Image.fromarray(a, "L").save(d / f"{i:05d}.png")
                out["fashion_mnist"] = timed_index(eng, "fmnist", d)
                print(f"fashion-mnist ({args.fmnist}):", out["fashion_mnist"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
