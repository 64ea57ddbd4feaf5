"""Ingest on a local Ray cluster against the plain pipeline, on the same cores, offline model.

    python benchmarks/ray_bench.py              # 500 JPEGs of about 0.7 MP from the shipped photos
    python benchmarks/ray_bench.py --images 200 --cpus 2

Both runs index the same folder into new collections of one data directory and are checked to hold
the same ids. The plain run's model is loaded before the clock starts (as in ingest_bench.py); the
Ray run's clock includes what a `--ray` run pays every time: starting the worker actors, each
loading its own model. Starting the local cluster (`ray.init`) is timed apart. Cores busy is
measured machine-wide from /proc/stat (Ray's work runs in other processes), so other load counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

import clipseek
from clipseek.demo import sample_refs


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the machine so far."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def make_jpegs(dest: Path, n: int) -> None:
    """``n`` distinct JPEGs of 1024x683 (0.7 MP): crops and mirrors of the shipped photos."""
    dest.mkdir(parents=True)
    photos = [Image.open(r.path).convert("RGB") for r in sample_refs()]
    for i in range(n):
        img = photos[i % len(photos)]
        k = i // len(photos)
        w, h = img.size
        box = ((k * 7) % max(1, w // 8), (k * 5) % max(1, h // 8), w - (k * 3) % max(1, w // 8), h - (k * 11) % max(1, h // 8))
        out = img.crop(box).resize((1024, 683), Image.BICUBIC)
        if k % 2:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        out.save(dest / f"{i:05d}.jpg", quality=90)


def timed(fn) -> dict:  # type: ignore[no-untyped-def]
    b0, t0, w0 = *busy_jiffies(), time.perf_counter()
    rep = fn()
    wall = time.perf_counter() - w0
    b1, t1 = busy_jiffies()
    cores = os.cpu_count() or 1
    return {
        "images": rep.embedded,
        "seconds": round(wall, 2),
        "images_per_second": round(rep.embedded / wall, 1),
        "machine_cores_busy": round(cores * (b1 - b0) / max(1, t1 - t0), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    import ray

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    out: dict = {
        "cpu": next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?"),
        "cpu_count": os.cpu_count(),
        "load_before": os.getloadavg(),
        "images": args.images,
    }
    tmp = Path(tempfile.mkdtemp(prefix="clipseek-ray-"))
    try:
        photos = tmp / "photos"
        make_jpegs(photos, args.images)
        with clipseek.Engine(tmp / "data") as eng:
            plain = eng.create("plain", model="offline")
            plain.encoder.embed_images([Image.new("RGB", (64, 64))])  # model load is not ingest
            out["plain"] = timed(lambda: plain.index(photos))
            print("plain:", out["plain"], flush=True)

            t0 = time.perf_counter()
            path = os.pathsep.join(p for p in sys.path if p)  # this checkout's clipseek in the workers
            ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path}})
            out["ray_init_seconds"] = round(time.perf_counter() - t0, 2)
            via_ray = eng.create("viaray", model="offline")
            out["ray"] = timed(lambda: via_ray.index(photos, ray=""))
            print("ray:", out["ray"], "ray.init", out["ray_init_seconds"], "s", flush=True)
            # The actors' start (one model each) is paid per run: a second run on a new collection.
            again = eng.create("viaray2", model="offline")
            out["ray_second_run"] = timed(lambda: again.index(photos, ray=""))
            print("ray, second run:", out["ray_second_run"], flush=True)
            ray.shutdown()
            # And the plain pipeline once more, so both are measured before and after (load drifts).
            plain2 = eng.create("plain2", model="offline")
            plain2.encoder.embed_images([Image.new("RGB", (64, 64))])
            out["plain_again"] = timed(lambda: plain2.index(photos))
            print("plain again:", out["plain_again"], flush=True)
            assert sorted(plain.store.ids()) == sorted(via_ray.store.ids()) == sorted(again.store.ids())
        out["load_after"] = os.getloadavg()
        plain_rate = (out["plain"]["images_per_second"] + out["plain_again"]["images_per_second"]) / 2
        ray_rate = (out["ray"]["images_per_second"] + out["ray_second_run"]["images_per_second"]) / 2
        out["ray_vs_plain"] = round(ray_rate / plain_rate, 2)
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
