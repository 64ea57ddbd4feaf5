"""URL ingest: 1,000 JPEGs served by a local HTTP server, downloaded, decoded, encoded and stored.

    python benchmarks/url_ingest.py                     # 1,000 images, the offline model
    python benchmarks/url_ingest.py --n 200 --json /tmp/url.json

Prints, each with the server's request count:
- the download stage alone (URLs -> the content cache, 16 at a time), images/s;
- `Collection.index` of the URLs end to end (download -> decode -> encode -> store), images/s, beside
  the same images indexed from a folder (the encoder is the same, so the gap is the download cost);
- a re-run (every item unchanged: no request at all), and a re-run after the records were deleted
  (as after a crash before their commit: re-encoded from the cache, still no request).

The server runs in its own process (a ThreadingHTTPServer on 127.0.0.1), so it does not share the
GIL with the client; it counts the requests it answers. The JPEGs (640x480, about 0.3 MP) are crops
of the sample photos, each different, so every URL is its own body in the content cache.
"""

from __future__ import annotations

import argparse
import http.server
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

import clipseek
from clipseek.downloads import DownloadStage
from clipseek.net import Limits


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_jpegs(out: Path, n: int) -> None:
    from clipseek.samples import sample_photos

    photos = [Image.open(p).convert("RGB") for _, p, _ in sample_photos()]
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = photos[i % len(photos)]
        scale = 1.0 + (i // len(photos)) * 0.01  # a different crop for every image
        w, h = src.size
        big = src.resize((int(w * scale * 2) + 640, int(h * scale * 2) + 480))
        x, y = (i * 7) % (big.width - 640), (i * 11) % (big.height - 480)
        big.crop((x, y, x + 640, y + 480)).save(out / f"{i:05d}.jpg", quality=90)


def serve(directory: str, port: Any, hits: Any) -> None:
    class Counting(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            with hits.get_lock():
                hits.value += 1
            super().do_GET()

    def handler(*a: Any, **kw: Any) -> Counting:
        return Counting(*a, directory=directory, **kw)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    port.value = srv.server_address[1]
    srv.serve_forever()


def timed(fn: Any, hits: Any) -> tuple[Any, dict[str, float]]:
    h0, c0, t0 = hits.value, cpu_seconds(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    return out, {"seconds": round(wall, 2), "requests": hits.value - h0, "client_cores_busy": round((cpu_seconds() - c0) / wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--model", default="offline")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="clipseek-url-bench-"))
    ctx = mp.get_context("spawn")
    port, hits = ctx.Value("i", 0), ctx.Value("i", 0)
    server = None
    try:
        make_jpegs(tmp / "www", args.n)
        server = ctx.Process(target=serve, args=(str(tmp / "www"), port, hits), daemon=True)
        server.start()
        while port.value == 0:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port.value}"
        urls = [f"{base}/{i:05d}.jpg" for i in range(args.n)]
        refs = [clipseek.ImageRef(id=u, url=u) for u in urls]
        out: dict[str, Any] = {
            "images": args.n,
            "cpu": _cpu_model(),
            "load_before": os.getloadavg(),
            "python": platform.python_version(),
        }

        stage = DownloadStage(tmp / "stage-cache", limits=Limits(), allow_private=True)
        got, t = timed(lambda: [r for r, e in stage.run(refs) if e is None], hits)
        out["download_stage"] = {**t, "ok": len(got), "images_per_second": round(len(got) / t["seconds"], 1)}
        print("download stage alone:", out["download_stage"])

        with clipseek.Engine(tmp / "data") as eng:
            files = eng.create("files", model=args.model)
            col = eng.create("urls", model=args.model)
            col.encoder.embed_images([Image.new("RGB", (64, 64))])  # model load is not ingest
            rep, t = timed(lambda: files.index(tmp / "www"), hits)
            out["folder_index"] = {**t, "added": rep.added, "images_per_second": round(rep.added / t["seconds"], 1)}
            print("index from a folder:", out["folder_index"])
            rep, t = timed(lambda: col.index(refs, allow_private_urls=True), hits)
            out["url_index"] = {**t, "added": rep.added, "failed": len(rep.failed),
                                "images_per_second": round(rep.added / t["seconds"], 1)}
            print("index from URLs:", out["url_index"])
            rep, t = timed(lambda: col.index(refs, allow_private_urls=True), hits)
            out["rerun"] = {**t, "unchanged": rep.unchanged, "added": rep.added}
            print("re-run:", out["rerun"])
            col.delete(urls)
            rep, t = timed(lambda: col.index(refs, allow_private_urls=True), hits)
            out["rerun_after_delete"] = {**t, "added": rep.added}
            print("re-run after deleting the records:", out["rerun_after_delete"])
        out["load_after"] = os.getloadavg()
        print("load average before/after:", out["load_before"], out["load_after"])
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
    finally:
        if server is not None:
            server.terminate()
            server.join(5)
        shutil.rmtree(tmp, ignore_errors=True)


def _cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    return next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Model name")), "")


if __name__ == "__main__":
    main()
