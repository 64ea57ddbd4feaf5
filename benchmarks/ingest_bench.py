"""Ingest rate end to end (files on disk -> decode + prepare on loader threads -> encoder -> local store),
beside the encoder's own rate in the same process, with time shares and cores busy.

    python benchmarks/ingest_bench.py --json /tmp/ingest.json            # 2,000 JPEGs, 3 models
    python benchmarks/ingest_bench.py --n 500 --models onnx-int8         # a shorter run
    python benchmarks/ingest_bench.py --model-dir /tmp/b32                # reuse an exported ViT-B/32

Inputs: ``--n`` full-size JPEGs (1024x683, about 0.7 MP, quality 90), each a different crop, flip and
scale of one of the shipped sample photos (so every file has its own bytes: none is deduplicated), and
Fashion-MNIST training images as 28x28 PNGs when Debian's ``dataset-fashion-mnist`` is installed
(``--fmnist N``; skipped when absent). Models: ``offline``, and CLIP ViT-B/32 with random weights of the
real size, exported to ONNX fp32 and int8 (speed does not depend on weight values).

Per model and input:
- ``encoder_img_s``: the encoder alone (``embed_prepared`` on inputs already prepared, batches of the
  encoder's batch size) on 128 of the same images, in the same process, just before the index run;
- ``img_s`` end to end, and ``ratio`` = img_s / encoder_img_s;
- ``cores_busy``: (user + system CPU seconds of the process, from /proc/self/stat) / wall seconds;
- time shares: ``encode`` (wall seconds in ``embed_prepared``, the encoding thread), ``write`` (in the
  store's upsert) and ``decode`` (loader-thread seconds in decode + hash + prepare, summed over the
  threads, so it can exceed the wall time when threads overlap), each / wall seconds;
- ``load``: the 1-minute load average before and after the run (the machine may be shared).
``draft_drift``: the cosine, per model, between each sample photo saved as a 0.7 MP JPEG and embedded
as the loader decodes it (``Image.draft`` DCT scaling down to ``draft_side``, else ``image_side``, then
integer reduction to ``image_side``) and embedded from a full-size decode: the cost of decoding less.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageOps

import clipseek
from clipseek.encoders.base import Encoder
from clipseek.images import load_image
from clipseek.ingest import IngestJob
from clipseek.samples import sample_photos

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SIZE = (1024, 683)
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def load_avg() -> float:
    return os.getloadavg()[0]


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")


def make_jpegs(out: Path, n: int) -> list[Path]:
    """``n`` different 0.7 MP JPEGs from the sample photos: crop, flip and scale vary per file."""
    out.mkdir(parents=True)
    photos = [Image.open(p).convert("RGB") for _, p, _ in sample_photos()]
    rng = np.random.default_rng(0)
    files = []
    seen: set[tuple[int, int, int, int]] = set()
    for i in range(n):
        im = photos[i % len(photos)]
        im = im.resize((SIZE[0] * 5 // 4, SIZE[1] * 5 // 4), Image.BICUBIC)
        while True:  # a crop not drawn before for this photo and flip: no two files share their bytes
            x, y = int(rng.integers(0, im.width - SIZE[0])), int(rng.integers(0, im.height - SIZE[1]))
            if (i % len(photos), i // len(photos) % 2, x, y) not in seen:
                seen.add((i % len(photos), i // len(photos) % 2, x, y))
                break
        im = im.crop((x, y, x + SIZE[0], y + SIZE[1]))
        if i // len(photos) % 2:
            im = ImageOps.mirror(im)
        p = out / f"{i:05d}.jpg"
        im.save(p, quality=90)
        files.append(p)
    return files


def make_fmnist(out: Path, n: int) -> list[Path] | None:
    cands = sorted(FMNIST_DIR.rglob("*train-images*")) if FMNIST_DIR.is_dir() else []
    if not cands:
        return None
    raw = gzip.open(cands[0]).read() if cands[0].suffix == ".gz" else cands[0].read_bytes()
    out.mkdir(parents=True)
    files = []
    for i, a in enumerate(np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:n]):
        p = out / f"{i:05d}.png"
        Image.fromarray(a, "L").save(p)
        files.append(p)
    return files


class Timers:
    """Wall seconds spent in decode (loader threads, summed), encode and write."""

    def __init__(self) -> None:
        self.s = {"decode": 0.0, "encode": 0.0, "write": 0.0}

    def wrap(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.s[key] += time.perf_counter() - t  # float += under the GIL: fine for a benchmark

        return timed


def encoder_rate(enc: Encoder, files: list[Path]) -> float:
    prepared = [enc.prepare(load_image(f, fit=enc.image_side, draft=enc.draft_side)) for f in files[:128]]
    enc.embed_prepared(prepared[: enc.batch_size])  # warm up
    t = time.perf_counter()
    enc.embed_prepared(prepared)
    return len(prepared) / (time.perf_counter() - t)


def run(eng: clipseek.Engine, name: str, model: str, files: list[Path]) -> dict[str, Any]:
    col = eng.create(name, model=model)
    enc = col.encoder
    enc.embed_texts(["warm up"])
    enc_rate = encoder_rate(enc, files)
    timers = Timers()
    real_load, real_embed, real_upsert = IngestJob._load, enc.embed_prepared, col.store.upsert
    IngestJob._load = timers.wrap("decode", real_load)  # type: ignore[method-assign]
    enc.embed_prepared = timers.wrap("encode", real_embed)  # type: ignore[method-assign]
    col.store.upsert = timers.wrap("write", real_upsert)  # type: ignore[method-assign]
    load0 = load_avg()
    try:
        c0, t0 = cpu_seconds(), time.perf_counter()
        rep = col.index(files[0].parent)
        wall = time.perf_counter() - t0
        cpu = cpu_seconds() - c0
    finally:
        IngestJob._load = real_load  # type: ignore[method-assign]
    rate = rep.embedded / wall
    return {
        "model": model, "images": rep.embedded, "failed": len(rep.failed), "batch": enc.batch_size,
        "seconds": round(wall, 1), "img_s": round(rate, 1), "encoder_img_s": round(enc_rate, 1),
        "ratio": round(rate / enc_rate, 2), "cores_busy": round(cpu / wall, 2),
        "shares": {k: round(v / wall, 2) for k, v in timers.s.items()},
        "load": [round(load0, 2), round(load_avg(), 2)],
    }


def draft_drift(eng: clipseek.Engine, models: dict[str, str], tmp: Path) -> dict[str, Any]:
    """Cosine between the loader's reduced decode and a full decode of each sample photo (0.7 MP JPEG)."""
    d = tmp / "drift"
    d.mkdir(exist_ok=True)
    files = []
    for pid, p, _ in sample_photos():
        files.append(d / f"{pid}.jpg")
        if not files[-1].exists():
            im = Image.open(p).convert("RGB")
            s = max(SIZE[0] / im.width, SIZE[1] / im.height)
            im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC).save(files[-1], quality=90)
    out = {}
    for label, model in models.items():
        enc = eng.create(f"drift-{label}", model=model).encoder
        reduced = enc.embed_images([load_image(f, fit=enc.image_side, draft=enc.draft_side) for f in files])
        full = enc.embed_images([load_image(f, fit=None) for f in files])
        cos = (reduced * full).sum(1)
        out[label] = {"image_side": enc.image_side, "draft_side": enc.draft_side, "min": round(float(cos.min()), 5),
                      "mean": round(float(cos.mean()), 5)}
    return out


def clip_dir(root: Path, given: str | None) -> Path:
    from clipseek.encoders.onnx_export import export
    from clipseek.encoders.random_models import make_clip

    d = Path(given) if given else root / "clip-vit-b32"
    man = d / "onnx" / "manifest.json"
    if not (man.is_file() and json.loads(man.read_text()).get("int8")):
        if not (d / "config.json").is_file():
            make_clip(d, size="clip-vit-b32")
        export(d, int8=True)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="full-size JPEGs to index")
    ap.add_argument("--fmnist", type=int, default=10000, help="Fashion-MNIST images, when installed (0: skip)")
    ap.add_argument("--models", default="offline,onnx,onnx-int8", help="offline, onnx (ViT-B/32 fp32), onnx-int8")
    ap.add_argument("--model-dir", help="a ViT-B/32 directory to reuse (exported there when needed)")
    ap.add_argument("--no-drift", action="store_true", help="skip the draft-drift measurement")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="clipseek-ingest-"))
    out: dict[str, Any] = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "runs": []}
    print(out, flush=True)
    try:
        wanted = args.models.split(",")
        models = {}
        if "offline" in wanted:
            models["offline"] = "offline"
        if {"onnx", "onnx-int8"} & set(wanted):
            d = clip_dir(tmp, args.model_dir)
            models.update({rt: f"{d}@{rt}" for rt in ("onnx", "onnx-int8") if rt in wanted})
        inputs = {"jpeg-0.7MP": make_jpegs(tmp / "jpegs", args.n)}
        fm = make_fmnist(tmp / "fmnist", args.fmnist) if args.fmnist else None
        if fm:
            inputs["fashion-mnist"] = fm
        elif args.fmnist:
            print(f"Fashion-MNIST not under {FMNIST_DIR}: skipped", flush=True)
        for label, spec in models.items():
            model, _, runtime = spec.partition("@")
            os.environ["CLIPSEEK_RUNTIME"] = runtime or "auto"
            # One Engine per model: an Engine keeps one encoder per model name, so fp32 and int8 of
            # the same directory would otherwise share the encoder built first.
            with clipseek.Engine(tmp / f"data-{label}") as eng:
                for inp, files in inputs.items():
                    r = run(eng, f"{label}-{inp}".replace(".", ""), model, files)
                    r.update(label=label, input=inp)
                    out["runs"].append(r)
                    print(r, flush=True)
        if not args.no_drift:
            for label, spec in models.items():
                model, _, runtime = spec.partition("@")
                os.environ["CLIPSEEK_RUNTIME"] = runtime or "auto"
                with clipseek.Engine(tmp / f"drift-{label}") as eng:
                    out.setdefault("draft_drift", {}).update(draft_drift(eng, {label: model}, tmp))
            print("draft drift:", out.get("draft_drift"), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
