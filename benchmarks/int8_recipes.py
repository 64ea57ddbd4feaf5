"""Which op types to quantise: the int8 recipes of ``clipseek model export`` side by side.

    python benchmarks/int8_recipes.py --model-dir /tmp/b32 --rounds 3 --json /tmp/recipes.json

Takes a ViT-B/32 directory with an fp32 ONNX export (``--model-dir``; made with random weights of the
real size and exported when missing, as ``ingest_bench.py`` does), quantises its image tower with each
recipe of ``clipseek.encoders.onnx_export.INT8_RECIPES`` (``quantize_dynamic``, int8 weights, the op
types the recipe names) into ``--work``, and reports per recipe:

- ``img_s``: the image tower alone, batch 16, two ONNX Runtime threads (the encoder's own session
  options), ``--seconds`` per round; the recipes take turns within each round, so a change in the
  machine's load hits them all; median and range over ``--rounds``;
- ``min_cosine``: the lowest cosine between the int8 and the fp32 tower's embeddings of the shipped
  sample photos, preprocessed with the export's own pipeline (what the drift costs on real pictures);
- ``ops``: the quantised node types in the file (``ConvInteger``, ``MatMulInteger`` ...).

The fp32 tower is measured in the same rounds, for scale. Speed does not depend on weight values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from ingest_bench import clip_dir, cpu_model, load_avg  # noqa: E402

from clipseek.encoders.onnx_export import INT8_RECIPES  # noqa: E402
from clipseek.encoders.preprocess import ImagePipeline  # noqa: E402
from clipseek.samples import sample_photos  # noqa: E402

BATCH = 16


def session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", help="a ViT-B/32 directory (exported there when needed)")
    ap.add_argument("--work", help="where the quantised towers go (default: a temporary folder)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0, help="timed seconds per recipe and round")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = Path(args.work or tempfile.mkdtemp(prefix="clipseek-recipes-"))
    tmp.mkdir(parents=True, exist_ok=True)
    d = clip_dir(tmp, args.model_dir)
    man = json.loads((d / "onnx" / "manifest.json").read_text())
    fp32 = d / "onnx" / man["image"]["file"]
    towers = {"fp32": fp32}
    for name, ops in INT8_RECIPES.items():
        out = tmp / f"image.{name}.onnx"
        if not out.is_file():
            quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=ops)
        towers[name] = out
    sessions = {k: session(p) for k, p in towers.items()}
    feed = man["image"]["input"]

    pipe = ImagePipeline.from_dict(man["preprocess"])
    photos = pipe([Image.open(p) for _, p, _ in sample_photos()])
    ref = unit(sessions["fp32"].run(None, {feed: photos})[0])

    x = np.random.default_rng(0).standard_normal((BATCH, *photos.shape[1:])).astype(np.float32)
    rates: dict[str, list[float]] = {k: [] for k in towers}
    before = load_avg()
    for _ in range(args.rounds):
        for k, s in sessions.items():
            s.run(None, {feed: x})  # warm
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < args.seconds:
                s.run(None, {feed: x})
                n += BATCH
            rates[k].append(round(n / (time.perf_counter() - t0), 1))
    after = load_avg()

    rows = []
    for k, p in towers.items():
        got = unit(sessions[k].run(None, {feed: photos})[0])
        ops = sorted({n.op_type for n in onnx.load(str(p)).graph.node if "Integer" in n.op_type or "Quant" in n.op_type})
        rows.append({"recipe": k, "ops_quantised": INT8_RECIPES.get(k, "none") or "default (all)",
                     "img_s_median": statistics.median(rates[k]), "img_s": rates[k],
                     "min_cosine": round(float((got * ref).sum(1).min()), 5), "int8_nodes": ops,
                     "mb": round(p.stat().st_size / 1e6, 1)})
    out = {"cpu": cpu_model(), "batch": BATCH, "threads": 2, "photos": len(photos), "load": [before, after], "rows": rows}
    print(json.dumps(out, indent=1))
    print("\n| recipe | img/s median (per round) | min cosine to fp32 (sample photos) | int8 nodes | MB |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {r['img_s_median']} ({', '.join(map(str, r['img_s']))}) | {r['min_cosine']} | "
              f"{', '.join(r['int8_nodes']) or '-'} | {r['mb']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
