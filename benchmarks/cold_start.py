"""Cold start: `clipseek search "a cat" -c NAME` as a new process, and where a text search's time goes.

Part 1 (process): for each model, builds a collection of ``--images`` photos (the sample photos, cut
into distinct crops), then runs ``python -m clipseek --data-dir D search "a cat" -c NAME`` ``--runs``
times as a new process and reports the median and min/max wall time and the median peak RSS (GNU
``time``'s ``%M`` of each child). Models: the offline model; a random-weight CLIP ViT-B/32 of the real size
(weights do not change speed) exported by clipseek's own ``model export``, queried with ONNX fp32 and
with ONNX int8. ``clipseek --help`` is timed the same way as the floor (interpreter + imports).

Part 2 (in process): a collection of 2,000 random vectors per model; a text search repeated 30 times,
split into encode / store search / the rest (medians), then the experiment that explains the gap: the
store's exact scan (``V @ q``, numpy on OpenBLAS with 2 threads) timed alone in a loop, right after a
text encode, with one BLAS thread, and as a BLAS-free ``einsum``.

The load average (``os.getloadavg``) is recorded beside every figure: the machine may be shared.

Usage (no download; about 2-4 minutes on 2 idle cores, ~1.2 GB of temporary files):

    python benchmarks/cold_start.py [--runs 10] [--images 200] [--models offline,onnx,onnx-int8]
                                    [--model-dir DIR] [--json out.json]

``--model-dir`` reuses a ViT-B/32 directory with an int8 export from an earlier run (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

QUERY = "a cat"


def load() -> str:
    return "%.2f %.2f %.2f" % os.getloadavg()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def make_photos(out: Path, n: int) -> Path:
    """``n`` distinct JPEGs: crops of the sample photos at varying offsets and scales."""
    from PIL import Image

    from clipseek.samples import sample_photos

    out.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(p).convert("RGB") for _, p, _ in sample_photos()]
    for i in range(n):
        im = sources[i % len(sources)]
        k = i // len(sources)
        w, h = im.size
        f = 0.6 + 0.4 * ((k * 7) % 10) / 10
        cw, ch = int(w * f), int(h * f)
        x0, y0 = (w - cw) * ((k * 3) % 5) // 4, (h - ch) * ((k * 2) % 5) // 4
        im.crop((x0, y0, x0 + cw, y0 + ch)).save(out / f"p{i:04d}.jpg", quality=90)
    return out


def make_vitb32(root: Path) -> Path:
    from clipseek.encoders.onnx_export import export
    from clipseek.encoders.random_models import make_clip

    d = make_clip(root / "clip-vit-b32-random", size="clip-vit-b32")
    export(d, int8=True)
    return d


TIME = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)


def run_cli(args: list[str], env: dict[str, str], scratch: Path) -> tuple[float, int | None]:
    """(wall seconds, peak RSS in MiB) of ``python -m clipseek ARGS`` as a new process.

    The RSS comes from GNU time (``%M``), which forks a small process: the kernel's own peak for a
    child forked straight from this benchmark would include this process's memory before the exec.
    """
    rss_file = scratch / "rss.txt"
    cmd = [sys.executable, "-m", "clipseek", *args]
    if TIME:
        cmd = [TIME, "-f", "%M", "-o", str(rss_file), *cmd]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"clipseek {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    rss = int(rss_file.read_text().split()[-1]) // 1024 if TIME else None
    return wall, rss


def time_process(args: list[str], env: dict[str, str], runs: int, scratch: Path) -> dict[str, Any]:
    run_cli(args, env, scratch)  # one warm-up run: files in the page cache, as for a user's second query
    before = load()
    walls, rss = [], []
    for _ in range(runs):
        w, r = run_cli(args, env, scratch)
        walls.append(w)
        rss.append(r)
    return {"median_s": round(statistics.median(walls), 3), "min_s": round(min(walls), 3),
            "max_s": round(max(walls), 3), "peak_rss_mib": int(statistics.median(rss)) if rss[0] else None,
            "load_before": before, "load_after": load()}


def in_process(model: str, data: Path, runtime: str | None) -> dict[str, Any]:
    """Run in a child process so each model starts clean (no torch, BLAS or ORT state from others)."""
    env = dict(os.environ, **({"CLIPSEEK_RUNTIME": runtime} if runtime else {}))
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import cold_start as c; " \
           f"import json; print(json.dumps(c._in_process({model!r}, {str(data)!r})))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _in_process(model: str, data: str) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from clipseek.engine import Engine
    from clipseek.types import Record

    med = statistics.median
    with Engine(data) as eng:
        col = eng.create("vectors", model=model)
        V = np.random.default_rng(0).standard_normal((2000, col.encoder_info.dim)).astype(np.float32)
        V /= np.linalg.norm(V, axis=1, keepdims=True)
        col.store.upsert([Record(f"img{i:05d}", V[i], {"year": 2000 + i % 25}) for i in range(len(V))])
    eng = Engine(data)
    col = eng.open("vectors", read_only=True)
    first = col.search(QUERY)
    walls, enc, srch = [], [], []
    for _ in range(30):
        t = time.perf_counter()
        r = col.search(QUERY)
        walls.append((time.perf_counter() - t) * 1e3)
        enc.append(r.encode_ms)
        srch.append(r.search_ms)
    e = col.encoder
    q = e.embed_text(QUERY)

    def after_encode(fn: Any) -> float:
        out = []
        for _ in range(30):
            e.embed_text(QUERY)
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1e3)
        return round(med(out), 3)

    def alone(fn: Any) -> float:
        fn()
        out = []
        for _ in range(30):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1e3)
        return round(med(out), 3)

    with threadpool_limits(1, user_api="blas"):
        one_thread = after_encode(lambda: V @ q)
    res = {
        "first_search_ms": round(first.took_ms, 1), "first_encode_ms": round(first.encode_ms, 1),
        "search_wall_ms": round(med(walls), 2), "encode_ms": round(med(enc), 2), "store_ms": round(med(srch), 2),
        "rest_ms": round(med(walls) - med(enc) - med(srch), 2),
        "embed_text_alone_ms": alone(lambda: e.embed_text(QUERY)),
        "scan_alone_ms": alone(lambda: V @ q),
        "scan_after_encode_ms": after_encode(lambda: V @ q),
        "scan_after_encode_1_blas_thread_ms": one_thread,
        "einsum_after_encode_ms": after_encode(lambda: np.einsum("nd,d->n", V, q)),
        "store_search_alone_ms": alone(lambda: col.store.search(q, limit=10)),
        "store_search_after_encode_ms": after_encode(lambda: col.store.search(q, limit=10)),
        "load": load(),
    }
    eng.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--models", default="offline,onnx,onnx-int8")
    ap.add_argument("--model-dir", type=Path, help="a ViT-B/32 directory with an int8 ONNX export to reuse")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (prints its path)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]

    tmp = Path(tempfile.mkdtemp(prefix="clipseek-coldstart-"))
    report: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                              "runs": args.runs, "images": args.images, "query": QUERY, "load_start": load(),
                              "process": {}, "in_process": {}}
    print(f"CPU {report['cpu']} ({report['cores']} cores), load {report['load_start']}", flush=True)
    try:
        photos = make_photos(tmp / "photos", args.images)
        model_dir = args.model_dir
        if any(m.startswith("onnx") for m in models) and model_dir is None:
            t = time.perf_counter()
            model_dir = make_vitb32(tmp)
            print(f"built and exported a random ViT-B/32 in {time.perf_counter() - t:.0f} s", flush=True)
        base_env = dict(os.environ)
        base_env.pop("CLIPSEEK_RUNTIME", None)
        report["process"]["--help"] = time_process(["--help"], base_env, args.runs, tmp)
        print(f"  {'clipseek --help':<28} {report['process']['--help']}", flush=True)
        for m in models:
            spec = "offline" if m == "offline" else str(model_dir)
            env = dict(base_env, **({} if m == "offline" else {"CLIPSEEK_RUNTIME": m}))
            data = tmp / f"data-{m}"
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "clipseek", "--data-dir", str(data), "index", str(photos),
                            "-c", "bench", "--model", spec], env=env, check=True, capture_output=True)
            idx_s = time.perf_counter() - t
            fig = time_process(["--data-dir", str(data), "search", QUERY, "-c", "bench"], env, args.runs, tmp)
            fig["index_s"] = round(idx_s, 1)
            report["process"][m] = fig
            print(f"  search, {m:<20} {fig}", flush=True)
        for m in models:
            spec = "offline" if m == "offline" else str(model_dir)
            fig = in_process(spec, tmp / f"vectors-{m}", None if m == "offline" else m)
            report["in_process"][m] = fig
            print(f"  in process, {m:<16} {fig}", flush=True)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report["load_end"] = load()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
