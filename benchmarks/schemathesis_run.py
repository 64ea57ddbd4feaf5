"""Schemathesis against a real ``clipseek serve``: every generated request must get no 5xx.

Prepares a data folder (a vector-only collection ``vec`` of 8-d vectors, an offline-model collection
``photos`` with the sample photos, a ``scratch`` collection for the DELETE route to remove, and a
root folder with three images for ingest jobs), starts the server on 127.0.0.1 and runs::

    schemathesis --config-file <tmp>/schemathesis.toml run http://127.0.0.1:PORT/openapi.json \\
        --checks not_a_server_error --max-examples N --seed S --workers 1 \\
        --report ndjson --report-ndjson-path <tmp>/events.ndjson

Path parameters are drawn from the real names 70% of the time (a dictionary in the config), so the
generated requests reach the routes' bodies and not only their 404s. Prints the schemathesis summary,
the number of HTTP requests it made (from the server's request log), those answered 5xx (with the
server's tracebacks), and exits 1 if there was any.

    python benchmarks/schemathesis_run.py                      # 30 examples per operation
    python benchmarks/schemathesis_run.py --max-examples 100 --seed 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

BIN = Path(sys.executable).parent

CONFIG = """
[dictionaries.collections]
values = ["vec", "photos"]

[dictionaries.records]
values = ["v0", "v1", "v2", "chelsea", "coffee"]

[parameters]
"path.name" = { dictionary = "collections", probability = 0.7 }
"path.id" = { dictionary = "records", probability = 0.7 }

[[operations]]
include-name = "DELETE /v1/collections/{name}"
parameters = { "path.name" = "scratch" }
"""


def prepare(home: Path) -> Path:
    from PIL import Image

    from clipseek import Engine
    from clipseek.samples import sample_photos
    from clipseek.types import ImageRef

    root = home / "root"
    root.mkdir(parents=True)
    photos = sample_photos()
    for pid, path, _ in photos[:3]:
        Image.open(path).convert("RGB").save(root / f"{pid}.jpg", quality=85)
    with Engine(home) as eng:
        vec = eng.create("vec", dim=8)
        rng = np.random.default_rng(0)
        vec.add_vectors([f"v{i}" for i in range(20)], rng.normal(size=(20, 8)), [{"n": i, "tag": "ab"[i % 2]} for i in range(20)])
        eng.create("scratch", dim=4)
        col = eng.create("photos", model="offline")
        col.index([ImageRef(id=pid, path=Path(p), metadata={"caption": c}) for pid, p, c in photos[:6]])
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-examples", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-time", type=int, default=0, help="a time budget in seconds for schemathesis (0: none)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("extra", nargs="*", help="more schemathesis options, after --, e.g. -- --exclude-path-regex '^/pinecone'")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clipseek-schemathesis-"))
    home = work / "home"
    root = prepare(home)
    (work / "schemathesis.toml").write_text(CONFIG)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEEK_")}
    env.update(CLIPSEEK_HOME=str(home), HF_HUB_OFFLINE="1")
    log_path = work / "server.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "clipseek", "serve", "--host", "127.0.0.1", "--port", str(port), "--root", str(root)],
        env=env, cwd=home, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"the server did not start:\n{log_path.read_text()}")
        cmd = [
            str(BIN / "schemathesis"), "--config-file", str(work / "schemathesis.toml"), "run", url + "/openapi.json",
            "--checks", "not_a_server_error", "--max-examples", str(args.max_examples), "--seed", str(args.seed),
            "--workers", "1", "--request-timeout", "60", "--no-color", "--generation-database", "none",
            "--report", "ndjson", "--report-ndjson-path", str(work / "events.ndjson"),
        ]
        if args.max_time:
            cmd += ["--max-time", str(args.max_time)]
        cmd += args.extra
        print("$ " + " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        st = subprocess.run(cmd, capture_output=True, text=True, cwd=work)  # its caches go there, not here
        took = time.perf_counter() - t0
    finally:
        server.send_signal(signal.SIGTERM)
        rc = server.wait(60)
    out = st.stdout + st.stderr
    summary = out[out.rfind("=" * 20, 0, max(0, out.rfind("SUMMARY"))) :] if "SUMMARY" in out else out[-4000:]
    print(summary.strip())
    requests = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("message") == "request" and rec.get("path") != "/openapi.json":
            requests.append(rec)
    by_status = Counter(r["status"] for r in requests)
    errors5 = [r for r in requests if r["status"] >= 500]
    print(f"\nschemathesis exit {st.returncode} in {took:.0f} s; server exit {rc}")
    print(f"HTTP requests the server answered (besides /openapi.json): {len(requests)}")
    print("by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items())))
    print("by method: " + ", ".join(f"{m}: {n}" for m, n in Counter(r["method"] for r in requests).most_common()))
    if errors5:
        print(f"\n{len(errors5)} requests answered 5xx:")
        for r in errors5[:20]:
            print(f"  {r['status']} {r['method']} {r['path']} (request {r['request_id']})")
        seen: set[str] = set()
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("logger") == "clipseek.server" and rec.get("exception"):
                tail = "\n".join(rec["exception"].rstrip().splitlines()[-6:])  # where it was raised, and what
                if tail not in seen:
                    seen.add(tail)
                    print(f"  {rec['message']}:\n    " + tail.replace("\n", "\n    "))
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if errors5 or st.returncode not in (0,) else 0)


if __name__ == "__main__":
    main()
