"""clipseek beside rclip 3.3.0 (the peer of issue 7, part 5): paired, interleaved index runs of the same
JPEG folder on the same machine, fp32 and int8, each tool through its own command line.

    python benchmarks/rclip_compare.py --work /tmp/rclip-compare --n 2000 --rounds 5 --json out.json
    python benchmarks/rclip_compare.py --work W --n 200 --rounds 2 --pairs int8      # a harness check
    python benchmarks/rclip_compare.py --work W --clipseek-model-dir /tmp/speedq/b32  # reuse an export

rclip runs from its own virtual environment (it pins numpy~=2.1.3 and regex~=2026.4.4, so it cannot share
clipseek's); this script installs nothing and checks it first:

    python3 -m venv /work/rclip-venv && /work/rclip-venv/bin/pip install rclip==3.3.0

Nothing is downloaded. rclip 3.3.0 loads ``<datadir>/ViT-B-32-256-datacomp_s34b_b86k/{visual,textual}.onnx``
and ``<datadir>/tokenizer/bpe_simple_vocab_16e6.txt.gz`` (datadir: ``$RCLIP_DATADIR``) and calls the
Hugging Face hub only for files that are missing (``rclip/model_download.py``). This script builds those
files once, under ``--work``, from open_clip's ``ViT-B-32-256`` with random weights (``pretrained=None``;
speed does not depend on weight values), exported the way rclip's ``scripts/convert_model.py`` does
(TorchScript exporter, opset 18, MHA fast path off, input ``input`` (N, 3, 256, 256) float32 / (N, 77)
int64, output ``output`` (N, 512), dynamic batch). Variants:

- ``fp32``: what rclip 3.3.0 ships: its convert script exports fp32 and quantises nothing;
- ``int8``: the same image tower through rclip's int8 recipe, from its history (commit eac5785,
  ``quantize_visual_onnx_fp32_to_int8``, dropped in a725b87 "simplify shipped model artifacts to fp32
  onnx/coreml" before 3.x shipped): ``quantize_dynamic(weight_type=QInt8,
  op_types_to_quantize=["MatMul", "Gemm"])``. The text tower stays fp32 in both (only the query uses it).

clipseek indexes with a random real-size ViT-B/32 (transformers ``CLIPModel``, ``clipseek model export``:
fp32 and int8), selected by ``CLIPSEEK_RUNTIME=onnx|onnx-int8`` and ``--model DIR``.

Each run is a new process of the tool's command line in a fresh data directory (rclip: a new datadir
whose model files are links into the cache, so its SQLite index starts empty; clipseek: a new
``CLIPSEEK_HOME``), started through a small driver (this file, ``--_driver``) that calls the tool's
own ``main`` with a timer around its indexing call only: rclip ``RClip.ensure_index`` (run as
``rclip -t 1 QUERY`` in the folder: rclip indexes the current directory, then searches; ``-n`` would
skip indexing), clipseek ``Collection.index`` (run as ``clipseek index DIR -c bench --model DIR``).
Per run:

- ``img_s``: images / (indexing call seconds - model load seconds): the pipeline's rate with the model
  loaded, what the issue's rates are (model load: the image session's creation, which both tools do
  lazily inside the indexing call; timed by wrapping rclip's ``load_visual_query_session`` and
  clipseek's ``OnnxBackend.session``); ``img_s_incl_load`` counts it in;
- ``process_s``: the whole command (imports, model load, indexing, rclip's search, exit) as the
  parent saw it; ``overhead_s`` = process_s - index_s - the tower probe below is each tool's fixed
  start/stop cost, measured in the same run, which is why no separate no-op run is subtracted;
- ``cores_busy``: process CPU seconds (all threads) / wall seconds of the indexing call;
- ``tower_img_s``: after indexing, in the same process and session, the image tower alone on
  ``--tower-images`` of the folder's images already preprocessed, at the tool's own batch size
  (rclip 8, clipseek 16); ``img_s / tower_img_s`` is how much of the tower's rate survives end to end;
- checks: images indexed == N; rclip's stored vectors are unit length, finite and distinct (it ran
  its ONNX path on this model and normalised); no socket connection was attempted (the drivers make
  any connect fail and record it; ``HF_HUB_OFFLINE=1`` too) and ``huggingface_hub`` was never imported.

Both tools get the same ONNX Runtime threads: rclip sets ``intra_op_num_threads`` to the CPU affinity
count itself; clipseek gets ``CLIPSEEK_THREADS`` = the same count. The JPEGs are read once into the
page cache, one untimed run of each tool and variant on ``--warmup`` of them comes first, and rounds
alternate which tool runs first. ``ratio`` = clipseek img/s / rclip img/s (median of the per-round ratios, and the ratio of the
medians); ``per_flop`` = ratio x (rclip tower FLOPs / ViT-B/32 FLOPs) = ratio x 1.30 (65 tokens at
256 px against 50 at 224).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RCLIP_VERSION = "3.3.0"
RCLIP_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"
RCLIP_VOCAB = "tokenizer/bpe_simple_vocab_16e6.txt.gz"
RCLIP_SIZE = 256
CONTEXT = 77
RCLIP_INT8_OPS = ["MatMul", "Gemm"]
BUILD_VERSION = 1  # bump when the build recipe changes, so a cached build is rebuilt
VARIANTS = ("int8", "fp32")
DEFAULT_RCLIP_PYTHON = "/work/rclip-venv/bin/python"
QUERY = "a photo of a dog"


# ------------------------------------------------------------------------------------------ drivers
# Run inside the tools' own environments (rclip's venv has no clipseek): stdlib at module level only.


def _guard_network(attempts: list[str]) -> None:
    """Make every outgoing connection fail, and record it: a run must need no network."""
    import socket

    def refuse(self: Any, address: Any, *a: Any, **k: Any) -> Any:
        attempts.append(repr(address))
        raise OSError(f"rclip_compare: network refused ({address!r})")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]


def _finish(out: str, res: dict[str, Any], attempts: list[str]) -> None:
    res["network_attempts"] = attempts
    res["huggingface_hub_imported"] = "huggingface_hub" in sys.modules
    Path(out).write_text(json.dumps(res))


def _driver_rclip(out: str, folder: str, tower_n: int) -> None:
    attempts: list[str] = []
    _guard_network(attempts)
    import numpy as np
    import rclip.main as rm
    from rclip import model_download
    from rclip.utils import helpers
    from rclip.utils.preprocess import preprocess

    res: dict[str, Any] = {"model_load_s": 0.0}
    real_load = model_download.load_visual_query_session

    def timed_load() -> Any:
        t = time.perf_counter()
        sess = real_load()
        res["model_load_s"] += time.perf_counter() - t
        res["ort_threads"] = sess.get_session_options().intra_op_num_threads
        res["visual_input"] = [(i.name, i.shape, i.type) for i in sess.get_inputs()]
        return sess

    model_download.load_visual_query_session = timed_load
    real_index = rm.RClip.ensure_index

    def timed_index(self: Any, directory: str) -> None:
        la, c0, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
        real_index(self, directory)
        wall = time.perf_counter() - t0
        res.update(index_s=wall, cpu_s=time.process_time() - c0, load=[la, os.getloadavg()[0]],
                   batch=self._indexing_batch_size, loader_threads=self._image_loading_workers)
        if tower_n:
            t_tower = time.perf_counter()
            files = sorted(str(p) for p in Path(directory).glob("*.jpg"))[:tower_n]
            prepared = [preprocess(helpers.read_image(f)) for f in files]
            bs = self._indexing_batch_size
            self._model.compute_preprocessed_image_features(prepared[:bs], for_indexing=True)  # warm up
            t = time.perf_counter()
            for i in range(0, len(prepared), bs):
                self._model.compute_preprocessed_image_features(prepared[i : i + bs], for_indexing=True)
            res["tower_img_s"] = len(prepared) / (time.perf_counter() - t)
            res["tower_section_s"] = time.perf_counter() - t_tower

    rm.RClip.ensure_index = timed_index  # type: ignore[method-assign]
    os.chdir(folder)
    sys.argv = ["rclip", "-t", "1", QUERY]
    try:
        rm.main()
        import sqlite3

        con = sqlite3.connect(str(helpers.get_app_datadir() / "db.sqlite3"))
        rows = con.execute("SELECT vector FROM images WHERE deleted IS NULL").fetchall()
        con.close()
        vecs = np.stack([np.frombuffer(r[0], np.float32) for r in rows]) if rows else np.zeros((0, 512), np.float32)
        norms = np.linalg.norm(vecs, axis=1)
        res.update(images=len(rows), dim=int(vecs.shape[1]), finite=bool(np.isfinite(vecs).all()),
                   norm_min=float(norms.min()) if rows else None, norm_max=float(norms.max()) if rows else None,
                   distinct=len({r[0] for r in rows}))
    finally:
        _finish(out, res, attempts)


def _driver_clipseek(out: str, folder: str, tower_n: int, collection: str, model: str) -> None:
    attempts: list[str] = []
    _guard_network(attempts)
    from clipseek.cli import main
    from clipseek.encoders.onnx_runtime import OnnxBackend
    from clipseek.engine import Collection

    res: dict[str, Any] = {"model_load_s": 0.0}
    real_session = OnnxBackend.session

    def timed_session(self: Any, tower: str) -> Any:
        if tower in self._sessions:
            return real_session(self, tower)
        t = time.perf_counter()
        sess = real_session(self, tower)
        if tower == "image":
            res["model_load_s"] += time.perf_counter() - t
            res["ort_threads"] = sess.get_session_options().intra_op_num_threads
            res["image_file"] = self.files["image"]
        return sess

    OnnxBackend.session = timed_session  # type: ignore[method-assign]
    real_index = Collection.index

    def timed_index(self: Any, target: Any, **kw: Any) -> Any:
        la, c0, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
        rep = real_index(self, target, **kw)
        wall = time.perf_counter() - t0
        enc = self.encoder
        res.update(index_s=wall, cpu_s=time.process_time() - c0, load=[la, os.getloadavg()[0]],
                   images=rep.embedded, failed=len(rep.failed), batch=enc.batch_size, runtime=enc.runtime())
        if tower_n:
            t_tower = time.perf_counter()
            files = sorted(Path(folder).glob("*.jpg"))[:tower_n]
            prepared = [enc.prepare(enc.load_image(f)) for f in files]
            enc.embed_prepared(prepared[: enc.batch_size])  # warm up
            t = time.perf_counter()
            enc.embed_prepared(prepared)
            res["tower_img_s"] = len(prepared) / (time.perf_counter() - t)
            res["tower_section_s"] = time.perf_counter() - t_tower
        return rep

    Collection.index = timed_index  # type: ignore[method-assign]
    sys.argv = ["clipseek", "index", folder, "-c", collection, "--model", model]
    try:
        main()
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    finally:
        _finish(out, res, attempts)


# ------------------------------------------------------------------------------------------ building


def _import_open_clip() -> Any:
    """open_clip, imported without torchvision and ftfy.

    clipseek's venv has ``open_clip_torch`` installed ``--no-deps`` (for its BPE file), without
    torchvision: installing torchvision there would switch transformers' image processors to their
    torchvision backend and change clipseek's preprocessing. open_clip imports torchvision at module
    level only for its preprocessing transforms and a batch-norm freezing helper, and ftfy only to clean
    text for its tokenizer; ``create_model`` of a ViT uses none of them. So this build process (and only
    it) puts inert stand-ins for those modules in ``sys.modules``; they fail if anything calls them.
    """
    import types

    import torch  # noqa: F401  (first: torch and transformers probe for torchvision at import)
    import transformers  # noqa: F401

    class _Missing(type):
        def __getattr__(cls, name: str) -> Any:
            return cls

        def __call__(cls, *a: Any, **k: Any) -> Any:
            raise RuntimeError("torchvision is not installed (rclip_compare builds the model without it)")

    class Unavailable(metaclass=_Missing):
        pass

    def any_name(attr: str) -> Any:
        if attr.startswith("__"):  # no __file__ etc.: inspect and importlib look for those
            raise AttributeError(attr)
        return Unavailable

    def stub(name: str) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__getattr__ = any_name  # type: ignore[method-assign]
        m.__path__ = []  # a package, so submodule imports resolve to the stubs below
        return m

    try:
        import torchvision  # noqa: F401
    except ImportError:
        for n in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops",
                  "torchvision.ops.misc"):
            sys.modules[n] = stub(n)
    try:
        import ftfy  # noqa: F401
    except ImportError:
        ft = types.ModuleType("ftfy")
        ft.fix_text = lambda text, *a, **k: text  # type: ignore[attr-defined]
        sys.modules["ftfy"] = ft
    import open_clip

    return open_clip


def _cos_min(a: Any, b: Any) -> float:
    import numpy as np

    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def build_rclip_models(work: Path) -> dict[str, Any]:
    """rclip's model files (fp32 and int8) under ``work/rclip-models/<variant>/``, built once and cached."""
    root = work / "rclip-models"
    meta_file = root / "build.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("build_version") == BUILD_VERSION and all(
            (root / v / RCLIP_SUBDIR / f).is_file() for v in VARIANTS for f in ("visual.onnx", "textual.onnx")
        ):
            return meta
    import warnings

    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    open_clip = _import_open_clip()
    shutil.rmtree(root, ignore_errors=True)
    fp_dir, q_dir = root / "fp32" / RCLIP_SUBDIR, root / "int8" / RCLIP_SUBDIR
    fp_dir.mkdir(parents=True)
    q_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32-256", pretrained=None).eval()

    class Visual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = model.visual

        def forward(self, x: Any) -> Any:
            return self.visual(x)

    class Textual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, x: Any) -> Any:
            return self.clip.encode_text(x)

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # as rclip's export: plain ops, not the fused MHA kernel
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for mod, probe, name in ((Visual(), torch.randn(1, 3, RCLIP_SIZE, RCLIP_SIZE), "visual.onnx"),
                                     (Textual(), torch.zeros(1, CONTEXT, dtype=torch.long), "textual.onnx")):
                torch.onnx.export(mod.eval(), (probe,), str(fp_dir / name), input_names=["input"],
                                  output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                                  opset_version=18, dynamo=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    quantize_dynamic(str(fp_dir / "visual.onnx"), str(q_dir / "visual.onnx"), weight_type=QuantType.QInt8,
                     op_types_to_quantize=RCLIP_INT8_OPS)
    os.link(fp_dir / "textual.onnx", q_dir / "textual.onnx")
    vocab = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    for v in VARIANTS:
        (root / v / RCLIP_VOCAB).parent.mkdir(parents=True)
        shutil.copyfile(vocab, root / v / RCLIP_VOCAB)

    # parity: the exports against torch, and rclip's int8 against fp32, on the same probes
    rng = np.random.default_rng(0)
    px = rng.standard_normal((4, 3, RCLIP_SIZE, RCLIP_SIZE)).astype(np.float32)
    tok = np.zeros((2, CONTEXT), dtype=np.int64)
    tok[:, 0], tok[:, 3] = 49406, 49407  # <start_of_text> a photo <end_of_text>
    tok[:, 1:3] = [[320, 1125], [539, 2368]]
    with torch.no_grad():
        ref_v = model.visual(torch.from_numpy(px)).numpy()
        ref_t = model.encode_text(torch.from_numpy(tok)).numpy()

    def run(path: Path, x: Any) -> Any:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]

    parity = {
        "visual_fp32_vs_torch": _cos_min(run(fp_dir / "visual.onnx", px), ref_v),
        "textual_fp32_vs_torch": _cos_min(run(fp_dir / "textual.onnx", tok), ref_t),
        "visual_int8_vs_torch": _cos_min(run(q_dir / "visual.onnx", px), ref_v),
    }
    if min(parity["visual_fp32_vs_torch"], parity["textual_fp32_vs_torch"]) < 0.9999:
        raise SystemExit(f"rclip model export does not match torch: {parity}")
    meta = {
        "build_version": BUILD_VERSION, "open_clip_model": "ViT-B-32-256", "weights": "random (torch seed 0)",
        "export": "torch.onnx.export dynamo=False opset 18, MHA fast path off, input/output 'input'/'output', dynamic batch",
        "int8_recipe": f"quantize_dynamic(weight_type=QInt8, op_types_to_quantize={RCLIP_INT8_OPS})",
        "visual_params_m": round(sum(p.numel() for p in model.visual.parameters()) / 1e6, 2),
        "sizes_mb": {f"{v}/{f}": round((root / v / RCLIP_SUBDIR / f).stat().st_size / 1e6, 1)
                     for v in VARIANTS for f in ("visual.onnx", "textual.onnx")},
        "parity_min_cosine": {k: round(x, 6) for k, x in parity.items()},
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__, "onnxruntime": ort.__version__},
        "build_s": round(time.perf_counter() - t0, 1),
    }
    meta_file.write_text(json.dumps(meta, indent=2))
    return meta


def clipseek_model(work: Path, given: str | None) -> Path:
    """A random real-size ViT-B/32 with clipseek's fp32 and int8 exports (``given``: reuse that one)."""
    from clipseek.encoders.onnx_export import export
    from clipseek.encoders.random_models import make_clip

    d = Path(given) if given else work / "clipseek-b32"
    man = d / "onnx" / "manifest.json"
    if not (man.is_file() and (json.loads(man.read_text()).get("int8") or {}).get("image")):
        if given:
            raise SystemExit(f"{d} has no int8 ONNX export (onnx/manifest.json); run `clipseek model export {d} --int8`")
        if not (d / "config.json").is_file():
            make_clip(d, size="clip-vit-b32")
        export(d, int8=True)
    return d


def jpegs(work: Path, n: int) -> Path:
    """``n`` different 0.7 MP JPEGs (ingest_bench's), cached under ``work/jpegs-N``."""
    from ingest_bench import make_jpegs

    d = work / f"jpegs-{n}"
    if len(list(d.glob("*.jpg"))) != n or any(p.suffix != ".jpg" for p in d.iterdir()):
        shutil.rmtree(d, ignore_errors=True)
        make_jpegs(d, n)
    return d


# ------------------------------------------------------------------------------------------ running


def check_rclip_venv(python: str) -> dict[str, Any]:
    hint = f"create it: python3 -m venv {Path(python).parent.parent} && {Path(python).parent}/pip install rclip=={RCLIP_VERSION}"
    if not Path(python).is_file():
        raise SystemExit(f"no rclip venv at {python}; {hint}")
    code = ("import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('rclip', 'onnxruntime', 'numpy', 'pillow')}))")
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, env=_rclip_env(None))
    if r.returncode:
        raise SystemExit(f"{python} cannot report rclip's version ({r.stderr.strip()[-300:]}); {hint}")
    versions = json.loads(r.stdout)
    if versions["rclip"] != RCLIP_VERSION:
        raise SystemExit(f"{python} has rclip {versions['rclip']}, this benchmark is for {RCLIP_VERSION}; {hint}")
    return versions


def _rclip_env(datadir: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RCLIP_MODEL_CACHE_DIR")}
    env.update(HF_HUB_OFFLINE="1")
    if datadir is not None:
        env["RCLIP_DATADIR"] = str(datadir)
    return env


def cpu_facts() -> dict[str, Any]:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    return {"model_name": name, "cores": len(os.sched_getaffinity(0)),
            "avx512f": "avx512f" in flags, "avx512_vnni": "avx512_vnni" in flags, "avx_vnni": "avx_vnni" in flags,
            "amx_int8": "amx_int8" in flags, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}


def run_tool(tool: str, variant: str, args: argparse.Namespace, folder: Path, models: dict[str, Path],
             cmodel: Path, tag: str) -> dict[str, Any]:
    """One run of ``tool`` indexing ``folder`` from scratch, through the driver; checked and with rates."""
    runs = args.work / "runs"
    runs.mkdir(exist_ok=True)
    data = runs / f"{tag}-data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    out = runs / f"{tag}.json"
    log = runs / f"{tag}.log"
    me = str(Path(__file__).resolve())
    threads = str(len(os.sched_getaffinity(0)))
    if tool == "rclip":
        for sub in (RCLIP_SUBDIR, "tokenizer"):  # links, so every run's datadir (and index) starts empty
            (data / sub).symlink_to(models[variant] / sub, target_is_directory=True)
        cmd = [args.rclip_python, me, "--_driver", "rclip", str(out), str(folder), str(args.tower_images)]
        env = _rclip_env(data)
    else:
        cmd = [sys.executable, me, "--_driver", "clipseek", str(out), str(folder), str(args.tower_images), "bench",
               str(cmodel)]
        env = dict(os.environ, CLIPSEEK_HOME=str(data), CLIPSEEK_RUNTIME="onnx-int8" if variant == "int8" else "onnx",
                   CLIPSEEK_THREADS=threads, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    process_s = time.perf_counter() - t0
    shutil.rmtree(data, ignore_errors=True)
    if rc or not out.is_file():
        raise SystemExit(f"{tool} {variant} failed (exit {rc}); log {log}:\n{log.read_text()[-3000:]}")
    r = json.loads(out.read_text())
    n = r.get("images", 0)
    expect = len(list(folder.glob("*.jpg")))
    r.update(tool=tool, variant=variant, process_s=round(process_s, 2),
             overhead_s=round(process_s - r["index_s"] - r.get("tower_section_s", 0.0), 2),
             img_s=round(n / (r["index_s"] - r["model_load_s"]), 2), img_s_incl_load=round(n / r["index_s"], 2),
             cores_busy=round(r["cpu_s"] / r["index_s"], 2))
    if "tower_img_s" in r:
        r["tower_img_s"] = round(r["tower_img_s"], 1)
        r["of_tower"] = round(r["img_s"] / r["tower_img_s"], 2)
    for k in ("index_s", "cpu_s", "model_load_s", "tower_section_s"):
        if k in r:
            r[k] = round(r[k], 2)
    r["load"] = [round(x, 2) for x in r["load"]]
    problems = []
    if n != expect:
        problems.append(f"indexed {n} of {expect}")
    if r["network_attempts"] or r["huggingface_hub_imported"]:
        problems.append(f"network: {r['network_attempts']}, huggingface_hub imported: {r['huggingface_hub_imported']}")
    if tool == "rclip" and not (r["finite"] and abs(r["norm_min"] - 1) < 1e-3 and abs(r["norm_max"] - 1) < 1e-3
                                and r["distinct"] == n):
        problems.append(f"rclip vectors: finite {r['finite']}, norms {r['norm_min']}..{r['norm_max']}, "
                        f"{r['distinct']} distinct")
    if problems:
        raise SystemExit(f"{tool} {variant}: " + "; ".join(problems) + f" (log {log})")
    return r


def summarise(runs: list[dict[str, Any]], flop_ratio: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in VARIANTS:
        by = {t: [r for r in runs if r["tool"] == t and r["variant"] == v] for t in ("rclip", "clipseek")}
        if not (by["rclip"] and by["clipseek"]):
            continue
        med = {t: statistics.median(r["img_s"] for r in rs) for t, rs in by.items()}
        per_round = [c["img_s"] / r["img_s"] for r, c in zip(by["rclip"], by["clipseek"])]
        ratio = statistics.median(per_round)
        s: dict[str, Any] = {
            "rclip_img_s": {"median": round(med["rclip"], 1), "min": min(r["img_s"] for r in by["rclip"]),
                            "max": max(r["img_s"] for r in by["rclip"])},
            "clipseek_img_s": {"median": round(med["clipseek"], 1), "min": min(r["img_s"] for r in by["clipseek"]),
                               "max": max(r["img_s"] for r in by["clipseek"])},
            "ratio_per_round": [round(x, 2) for x in per_round],
            "ratio": round(ratio, 2), "ratio_of_medians": round(med["clipseek"] / med["rclip"], 2),
            "per_flop": round(ratio * flop_ratio, 2),
            "cores_busy": {t: round(statistics.median(r["cores_busy"] for r in rs), 2) for t, rs in by.items()},
        }
        if all("tower_img_s" in r for rs in by.values() for r in rs):
            s["tower_img_s"] = {t: round(statistics.median(r["tower_img_s"] for r in rs), 1) for t, rs in by.items()}
            s["of_tower"] = {t: round(statistics.median(r["of_tower"] for r in rs), 2) for t, rs in by.items()}
        out[v] = s
    return out


def table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table (for benchmarks/README.md)."""
    rows = ["| pair | rclip img/s median (range) | clipseek img/s median (range) | clipseek/rclip (per round) | "
            "per FLOP | cores busy rclip / clipseek | tower alone rclip / clipseek | of tower rclip / clipseek |",
            "|---|---|---|---|---|---|---|---|"]
    for v, x in summary.items():
        r, c = x["rclip_img_s"], x["clipseek_img_s"]
        tw, of = x.get("tower_img_s", {}), x.get("of_tower", {})
        rows.append(f"| {v} | {r['median']} ({r['min']}-{r['max']}) | {c['median']} ({c['min']}-{c['max']}) | "
                    f"**{x['ratio']:.2f}** ({', '.join(f'{q:.2f}' for q in x['ratio_per_round'])}) | {x['per_flop']:.2f} | "
                    f"{x['cores_busy']['rclip']:.2f} / {x['cores_busy']['clipseek']:.2f} | "
                    f"{tw.get('rclip', '-')} / {tw.get('clipseek', '-')} | {of.get('rclip', '-')} / {of.get('clipseek', '-')} |")
    return "\n".join(rows)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--_driver":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "rclip":
            _driver_rclip(rest[0], rest[1], int(rest[2]))
        else:
            _driver_clipseek(rest[0], rest[1], int(rest[2]), rest[3], rest[4])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/rclip-compare"),
                    help="cache for the built models and JPEGs, and the runs' logs")
    ap.add_argument("--n", type=int, default=2000, help="JPEGs of 1024x683 to index")
    ap.add_argument("--rounds", type=int, default=5, help="paired rounds per variant")
    ap.add_argument("--pairs", default="int8,fp32", help="variants to compare: int8, fp32 or both")
    ap.add_argument("--rclip-python", default=DEFAULT_RCLIP_PYTHON, help="python of the venv with rclip 3.3.0")
    ap.add_argument("--clipseek-model-dir", help="a ViT-B/32 directory with clipseek's fp32+int8 export to reuse")
    ap.add_argument("--tower-images", type=int, default=64, help="images for the tower-alone rate (0: skip)")
    ap.add_argument("--warmup", type=int, default=16, help="images of an untimed first run of each tool and variant (0: none)")
    ap.add_argument("--json", help="also write everything to this file")
    args = ap.parse_args()
    pairs = [p for p in args.pairs.split(",") if p]
    if not set(pairs) <= set(VARIANTS):
        ap.error(f"--pairs: use {', '.join(VARIANTS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    from encoder_speed import vit_macs

    report: dict[str, Any] = {"cpu": cpu_facts(), "n": args.n, "rounds": args.rounds,
                              "rclip_venv": check_rclip_venv(args.rclip_python)}
    import onnxruntime
    import PIL

    report["clipseek_venv"] = {"onnxruntime": onnxruntime.__version__, "pillow": PIL.__version__}
    print(json.dumps(report), flush=True)
    report["rclip_models"] = build_rclip_models(args.work)
    print("rclip models:", json.dumps(report["rclip_models"]), flush=True)
    models = {v: args.work / "rclip-models" / v for v in VARIANTS}
    cmodel = clipseek_model(args.work, args.clipseek_model_dir)
    report["clipseek_model"] = {"dir": str(cmodel),
                                "int8_recipe": json.loads((cmodel / "onnx" / "manifest.json").read_text()).get("int8_recipe")}
    folder = jpegs(args.work, args.n)
    for p in folder.iterdir():  # both tools then read from the page cache
        p.read_bytes()
    if args.warmup:  # untimed: model files into the page cache, first imports, lazy init; checked all the same
        warm = args.work / f"warmup-{args.warmup}"
        shutil.rmtree(warm, ignore_errors=True)
        warm.mkdir()
        for p in sorted(folder.glob("*.jpg"))[: args.warmup]:
            os.link(p, warm / p.name)
        for v in pairs:
            for tool in ("rclip", "clipseek"):
                run_tool(tool, v, args, warm, models, cmodel, f"warmup-{v}-{tool}")
    report["flop_ratio"] = round(vit_macs(RCLIP_SIZE, 32) / vit_macs(224, 32), 3)
    report["load_before"] = [round(x, 2) for x in os.getloadavg()]
    runs: list[dict[str, Any]] = []
    try:
        for rnd in range(args.rounds):
            for i, v in enumerate(pairs):
                order = ("rclip", "clipseek") if (rnd + i) % 2 == 0 else ("clipseek", "rclip")
                for tool in order:
                    r = run_tool(tool, v, args, folder, models, cmodel, f"r{rnd}-{v}-{tool}")
                    r["round"] = rnd
                    runs.append(r)
                    keys = ("img_s", "img_s_incl_load", "index_s", "model_load_s", "process_s", "overhead_s", "cores_busy",
                            "tower_img_s", "of_tower", "load", "ort_threads")
                    print(f"round {rnd} {v:4} {tool:8}", {k: r.get(k) for k in keys}, flush=True)
    finally:
        report["load_after"] = [round(x, 2) for x in os.getloadavg()]
        report["runs"] = runs
        report["summary"] = summarise(runs, report["flop_ratio"])
        print("summary:", json.dumps(report["summary"]), flush=True)
        print(table(report["summary"]), flush=True)
        print("load before", report["load_before"], "after", report["load_after"], flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
