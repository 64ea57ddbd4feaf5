"""What batching concurrent queries into one encoder call gains (or costs), with the offline model.

N threads (what the server's thread pool does with N concurrent requests) each run searches on a
small offline-model collection: text queries (distinct English and Chinese texts) or image queries
(the sample photos as uploaded bytes: decode + embed + search). Each case is run unbatched (threads
call the encoder concurrently, as without the wrapper) and through :class:`BatchingEncoder` with a
few windows. Prints queries/s and p50/p99 latency per case.

    python benchmarks/query_batching.py                       # text and image, 1/4/16 threads
    python benchmarks/query_batching.py --kinds text --threads 8 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from clipseek import Engine
from clipseek.server.batching import BatchingEncoder

TEXTS = [
    "a cat", "a tabby cat", "a cup of coffee", "espresso", "a motorcycle", "a rocket launch", "a flower",
    "a Chinese temple", "a page of printed text", "an astronaut", "a horse", "a dog on a beach", "a red car",
    "一只猫", "一杯咖啡", "摩托车", "火箭发射", "花", "中国的寺庙", "一页印刷文字", "宇航员", "一匹马", "海滩上的狗",
    "a man with a camera on a tripod", "a bowl of soup", "a city street at night", "a mountain lake", "a bicycle",
]


def build(data: Path) -> None:
    """A collection of the sample photos (19) with the offline model."""
    from clipseek.samples import sample_photos
    from clipseek.types import ImageRef

    with Engine(data) as eng:
        col = eng.create("bench", model="offline")
        col.index([ImageRef(id=pid, path=Path(path)) for pid, path, _ in sample_photos()])


def run_case(engine: Engine, kind: str, threads: int, seconds: float, payloads: list) -> dict:
    col = engine.open("bench", read_only=True)
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds
    start = threading.Barrier(threads + 1)

    def worker(k: int) -> None:
        i = k
        mine: list[float] = []
        start.wait()
        while time.perf_counter() < stop:
            q = payloads[i % len(payloads)]
            i += threads
            t0 = time.perf_counter()
            if kind == "text":
                col.search(q, top=5)
            else:
                col.search(image=q, top=5)
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    return {"lat": lat, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="text,image")
    ap.add_argument("--threads", default="1,4,16")
    ap.add_argument("--windows", default="off,0,2,10", help="'off' = unbatched; numbers = batch window in ms")
    ap.add_argument("--seconds", type=float, default=6.0, help="per case, split over the rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", default=None, help="reuse a data folder (made on first use)")
    args = ap.parse_args()
    data = Path(args.data or tempfile.mkdtemp(prefix="clipseek-batchbench-"))
    if not (data / "collections" / "bench").is_dir():
        build(data)
    from clipseek.samples import sample_photos

    images = [Path(p).read_bytes() for _, p, _ in sample_photos()]
    print(f"cores available: {len(os.sched_getaffinity(0))}, load: {os.getloadavg()}")
    windows = args.windows.split(",")
    engines = {}
    for w in windows:  # one engine (one model) per variant, loaded and warmed once
        wrap = None if w == "off" else (lambda e, w=float(w): BatchingEncoder(e, window_ms=w))
        eng = Engine(data, wrap_encoder=wrap)
        col = eng.open("bench", read_only=True)
        col.search(TEXTS[0], top=1)
        col.search(image=images[0], top=1)
        engines[w] = eng
    print(f"{'kind':6} {'threads':>7} {'batching':>9} {'queries':>7} {'q/s':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for kind in args.kinds.split(","):
        payloads = TEXTS if kind == "text" else images
        for threads in [int(t) for t in args.threads.split(",")]:
            # Rounds alternate the variants, so a change in the machine's load hits them alike.
            lat: dict[str, list[float]] = {w: [] for w in windows}
            wall: dict[str, float] = dict.fromkeys(windows, 0.0)
            for _ in range(args.rounds):
                for w in windows:
                    r = run_case(engines[w], kind, threads, args.seconds / args.rounds, payloads)
                    lat[w].extend(r["lat"])
                    wall[w] += r["wall"]
            for w in windows:
                xs = sorted(lat[w])
                p50, p99 = statistics.median(xs) * 1000, xs[min(len(xs) - 1, int(0.99 * len(xs)))] * 1000
                label = "off" if w == "off" else f"{w} ms"
                print(f"{kind:6} {threads:>7} {label:>9} {len(xs):>7} {len(xs) / wall[w]:>7.1f} {p50:>8.1f} {p99:>8.1f}", flush=True)
    for eng in engines.values():
        eng.close()
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
