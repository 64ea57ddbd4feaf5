"""Encoder speed: CLIP ViT-B/32 and ViT-B/16 (random weights of the real configurations: speed does not
depend on weight values) with PyTorch, ONNX Runtime fp32 and ONNX Runtime int8, on this CPU.

Measures, per model and runtime:
- image tower images/s at batch 1 and at the best of a few batch sizes (tensors already preprocessed,
  so this is the encoder alone; decoding and resizing are measured by the ingest benchmark);
- text tower texts/s at batch 64, and the latency of one short text query (tokenise + encode), the
  part a user waits for on every text search;
- the cosine of fp32 / int8 ONNX outputs against PyTorch on the same inputs (real-size parity);
- the theoretical ceiling: the model's FLOPs per image against the cores' peak (AVX-512 FMA at the
  nominal clock) and against a measured large fp32 matrix multiply.

Usage (no download; writes the models under a temporary directory, ~1.5 GB):

    python benchmarks/encoder_speed.py [--threads 2] [--models clip-vit-b32,clip-vit-b16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def vit_macs(image: int, patch: int, d: int = 768, layers: int = 12, mlp: int = 3072, proj: int = 512) -> float:
    """Multiply-accumulates of one ViT image tower forward pass (attention + MLP + patch embed + head)."""
    n_p = (image // patch) ** 2
    n = n_p + 1
    per_layer = n * (4 * d * d + 2 * d * mlp) + 2 * n * n * d
    return layers * per_layer + n_p * (3 * patch * patch * d) + d * proj


def cpu_facts() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(re.search(r"^flags\s*:\s*(.*)$", info, re.M).group(1).split()) if "flags" in info else set()
    mhz = [float(x) for x in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)]
    name = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    return {
        "model_name": name.group(1) if name else platform.processor(),
        "cores": os.cpu_count(),
        "mhz": max(mhz) if mhz else None,
        "avx512": "avx512f" in flags, "avx2": "avx2" in flags, "fma": "fma" in flags,
        "vnni": "avx512_vnni" in flags or "avx_vnni" in flags, "amx_int8": "amx_int8" in flags,
        "fp32_lanes": lanes,
    }


def measured_gflops(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    torch.mm(a, b)
    t = time.perf_counter()
    reps = 10
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * 2048**3 * reps / (time.perf_counter() - t) / 1e9


def timeit(fn, min_time: float = 3.0, min_reps: int = 3) -> float:  # type: ignore[no-untyped-def]
    """Median seconds per call (one warm-up call first)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 50:
            break
    return statistics.median(times)


def bench_model(size: str, root: Path, threads: int, batches: list[int]) -> dict:
    import onnxruntime as ort
    import torch

    from clipseek.encoders.hf import TorchBackend, text_settings
    from clipseek.encoders.onnx_export import export
    from clipseek.encoders.onnx_runtime import make_tokenizer
    from clipseek.encoders.random_models import REAL_SIZES, make_clip

    torch.set_num_threads(threads)
    d = root / size
    t0 = time.perf_counter()
    make_clip(d, size=size)
    t_make = time.perf_counter() - t0
    t0 = time.perf_counter()
    man = export(d, int8=True)
    t_export = time.perf_counter() - t0
    spec = REAL_SIZES[size]["vision"]
    res: dict = {"model": size, "make_s": round(t_make, 1), "export_s": round(t_export, 1),
                 "parity_probe": man["parity"], "runtimes": {}}
    ref = TorchBackend(d, "clip", text_settings(d, "clip", None))
    rng = np.random.default_rng(0)
    px_all = rng.standard_normal((max(batches), 3, spec["image_size"], spec["image_size"])).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sessions = {}
    for rt, files in (("onnx-fp32", ("image.onnx", "text.onnx")), ("onnx-int8", ("image.int8.onnx", "text.int8.onnx"))):
        sessions[rt] = tuple(ort.InferenceSession(str(d / "onnx" / f), so, providers=["CPUExecutionProvider"]) for f in files)
    tok = make_tokenizer(d, man)
    query = ["a red pickup truck with a ladder on the roof"]
    texts64 = [f"a photo of a {w} number {i}" for i, w in enumerate(["cat", "dog", "car", "truck"] * 16)]
    ref_img = ref.images(px_all[:8])
    ref_txt = ref.texts(texts64[:8])

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return float((a * b).sum(1).min())

    for rt in ("torch", "onnx-fp32", "onnx-int8"):
        out: dict = {"images_per_s": {}}
        if rt == "torch":
            img_fn = lambda px: ref.images(px)  # noqa: E731
            txt_fn = lambda ts: ref.texts(ts)  # noqa: E731
        else:
            si, st = sessions[rt]
            img_fn = lambda px, si=si: si.run(None, {"pixel_values": px})[0]  # noqa: E731
            txt_fn = lambda ts, st=st: st.run(None, tok(ts))[0]  # noqa: E731
            out["min_cosine_vs_torch"] = {"image": cos(img_fn(px_all[:8]), ref_img), "text": cos(txt_fn(texts64[:8]), ref_txt)}
        for b in batches:
            px = np.ascontiguousarray(px_all[:b])
            sec = timeit(lambda f=img_fn, x=px: f(x), min_time=2.0 if b == 1 else 3.0)
            out["images_per_s"][b] = round(b / sec, 1)
        best = max(out["images_per_s"], key=lambda k: out["images_per_s"][k])
        out["best_batch"] = best
        out["texts_per_s_batch64"] = round(64 / timeit(lambda f=txt_fn: f(texts64), min_time=2.0), 1)
        out["one_text_query_ms"] = round(1000 * timeit(lambda f=txt_fn: f(query), min_time=1.5, min_reps=10), 2)
        res["runtimes"][rt] = out
        print(f"  {size} {rt}: {out}", file=sys.stderr, flush=True)
    macs = vit_macs(spec["image_size"], spec["patch_size"])
    res["image_gflops"] = round(2 * macs / 1e9, 2)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--models", default="clip-vit-b32,clip-vit-b16")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    facts = cpu_facts()
    load0 = os.getloadavg()
    gf = measured_gflops(args.threads)
    peak = (facts["mhz"] or 0) / 1000 * args.threads * facts["fp32_lanes"] * 2 * 2  # 2 FMA ports x (mul+add)
    report = {"cpu": facts, "threads": args.threads, "measured_sgemm_gflops": round(gf, 1),
              "nominal_fp32_peak_gflops": round(peak, 1), "load_avg_start": load0,
              "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "models": []}
    print(json.dumps({k: v for k, v in report.items() if k != "models"}), file=sys.stderr, flush=True)
    batches = {"clip-vit-b32": [1, 8, 32], "clip-vit-b16": [1, 8, 16]}
    with tempfile.TemporaryDirectory(prefix="clipseek-bench-") as tmp:
        for size in args.models.split(","):
            r = bench_model(size, Path(tmp), args.threads, batches.get(size, [1, 8, 32]))
            r["ceiling_images_per_s"] = {
                "nominal_fp32_peak": round(peak / r["image_gflops"], 1),
                "measured_sgemm": round(gf / r["image_gflops"], 1),
            }
            report["models"].append(r)
    report["load_avg_end"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
