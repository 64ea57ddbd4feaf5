"""Load test of ``clipseek serve`` with Locust at 1k and 100k records: text search, image search
(upload) and vector search with 1, 8 and 32 concurrent users, each case bounded in time.

For each size it prepares (once; reused from ``--data-root``) a data folder with two collections:

* ``vec``: vector-only, 512-d, ``size`` random unit vectors (vector search);
* ``photos``: the offline model (1280-d): the 19 sample photos indexed, plus ``size`` random unit
  vectors of the model's dimension added with ``Collection.add_vectors`` (the model still embeds
  every text and image query; the random records only make the store that big).

Both are searched once before serving, so the ANN index is built and saved before the timing.
Then it starts ``clipseek serve`` on 127.0.0.1, warms the model (one query of each kind), and
runs ``locust --headless -u N -r N -t Ts --tags KIND`` per case, printing requests/s, p50, p99 and
errors from Locust's CSV, the cores the server and Locust used, and the load average.

    python benchmarks/load_run.py                                   # 1k and 100k, all cases, 20 s each
    python benchmarks/load_run.py --sizes 1000 --users 1,8 --seconds 10 --kinds vector
    python benchmarks/load_run.py --profile text:8                  # + a py-spy profile of that case
"""

from __future__ import annotations

import argparse
import csv
import os
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

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
VEC_DIM = 512


def prepare(home: Path, size: int) -> None:
    from clipseek import Engine
    from clipseek.samples import sample_photos
    from clipseek.types import ImageRef

    if (home / "ready").exists():
        return
    rng = np.random.default_rng(size)
    t0 = time.perf_counter()
    with Engine(home) as eng:
        for name in eng.names():
            eng.drop(name)
        vec = eng.create("vec", dim=VEC_DIM)
        photos = eng.create("photos", model="offline")
        photos.index([ImageRef(id=pid, path=Path(p), metadata={"caption": c}) for pid, p, c in sample_photos()])
        dim = photos.encoder_info.dim
        chunk = 20_000
        for col, d in ((vec, VEC_DIM), (photos, dim)):
            for start in range(0, size, chunk):
                n = min(chunk, size - start)
                v = rng.normal(size=(n, d)).astype(np.float32)
                col.add_vectors([f"r{i}" for i in range(start, start + n)], v, [{"n": i} for i in range(start, start + n)])
            col.search(vector=rng.normal(size=d), top=10)  # builds the ANN index now, not in the first request
            print(f"  {col.name}: {col.count()} records of {d}-d", flush=True)
    (home / "ready").write_text("ok")
    print(f"  prepared {home} in {time.perf_counter() - t0:.0f} s", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def start_server(home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEEK_")}
    env.update(CLIPSEEK_HOME=str(home), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipseek", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=home, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"clipseek serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("clipseek serve did not start")


def warm(url: str) -> None:
    from clipseek.samples import sample_photos

    path = sample_photos()[0][1]
    with httpx.Client(base_url=url, timeout=120) as c:
        for body in ({"text": "a cat"}, {"vector": [1.0] * VEC_DIM}):
            col = "photos" if "text" in body else "vec"
            r = c.post(f"/v1/collections/{col}/search", json=body)
            r.raise_for_status()
        r = c.post("/v1/collections/photos/search/image", files={"file": ("q.png", path.read_bytes(), "image/png")})
        r.raise_for_status()


def run_case(url: str, kind: str, users: int, seconds: int, out: Path, server_pid: int, profile: bool) -> dict:
    prefix = out / f"{kind}-{users}"
    cmd = [
        str(BIN / "locust"), "-f", str(HERE / "load_test.py"), "--headless", "--only-summary",
        "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--stop-timeout", "10",
        "--tags", kind, "--host", url, "--csv", str(prefix), "--loglevel", "WARNING",
    ]
    spy = None
    if profile:
        spy = subprocess.Popen(
            [str(BIN / "py-spy"), "record", "--pid", str(server_pid), "--duration", str(max(5, seconds - 4)),
             "--rate", "50", "--format", "raw", "--output", str(prefix) + ".folded", "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, t0 = cpu_seconds(server_pid), time.perf_counter()
    lp = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LOAD_VECTOR_DIM": str(VEC_DIM)})
    wall = time.perf_counter() - t0
    server_cores = (cpu_seconds(server_pid) - cpu0) / wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # locust (waited for) and py-spy once reaped
    if spy is not None:
        spy.wait(60)
    row = next(r for r in csv.DictReader((prefix.parent / f"{prefix.name}_stats.csv").open()) if r["Name"] == "Aggregated")
    return {
        "requests": int(row["Request Count"]),
        "errors": int(row["Failure Count"]),
        "rps": float(row["Requests/s"]),
        "p50": float(row["50%"]),
        "p99": float(row["99%"]),
        "server_cores": server_cores,
        "cpu_ms": server_cores / max(float(row["Requests/s"]), 1e-9) * 1000,
        "locust_cores": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / wall,
        "locust_rc": lp.returncode,
        "locust_err": lp.stderr[-1500:] if lp.returncode not in (0, 1) else "",
    }


IDLE = ("Condition.wait", "Runner.run", "select", "Event.wait", "Thread.join")


def top_frames(folded: Path, n: int = 10) -> tuple[float, list[tuple[str, float]], list[tuple[str, float]]]:
    """From a py-spy raw (folded) profile: the share of busy samples (not a thread waiting), the
    functions they spent their own time in, and the share of busy samples under each clipseek
    function (server code, not the frameworks' plumbing)."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = busy = 0
    for line in folded.read_text().splitlines():
        stack, _, num = line.rpartition(" ")
        k = int(num)
        frames = stack.split(";")
        total += k
        leaf = frames[-1].split(" (")[0]
        if any(leaf.startswith(w) or leaf.endswith(w) for w in IDLE):
            continue
        busy += k
        own[f"{leaf} ({frames[-1].rsplit('/', 1)[-1].rstrip(')')})"] += k
        mine = {f for f in frames if "clipseek/" in f and "clipseek/cli/" not in f and "__main__" not in f}
        for fn in mine:
            under[f"{fn.split(' (')[0]} ({fn.rsplit('/', 1)[-1].split(':')[0]})"] += k
    b = max(busy, 1)
    return busy / max(total, 1), [(f, c / b) for f, c in own.most_common(n)], [(f, c / b) for f, c in under.most_common(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,100000")
    ap.add_argument("--kinds", default="text,image,vector")
    ap.add_argument("--users", default="1,8,32")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--data-root", default=str(Path(tempfile.gettempdir()) / "clipseek-load"))
    ap.add_argument("--profile", default="", help="cases to profile with py-spy, e.g. text:8,image:8")
    args = ap.parse_args()
    root = Path(args.data_root)
    profile = set(args.profile.split(",")) if args.profile else set()
    print(f"CPU: {os.cpu_count()} cores; load average at start: {os.getloadavg()}", flush=True)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        home = root / f"{size}"
        home.mkdir(parents=True, exist_ok=True)
        print(f"size {size}: preparing {home}", flush=True)
        prepare(home, size)
        out = home / "locust"
        out.mkdir(exist_ok=True)
        proc, url = start_server(home, home / "server.log")
        try:
            warm(url)
            for kind in args.kinds.split(","):
                for users in [int(u) for u in args.users.split(",")]:
                    r = run_case(url, kind, users, args.seconds, out, proc.pid, f"{kind}:{users}" in profile)
                    r.update(size=size, kind=kind, users=users, load=os.getloadavg()[0])
                    rows.append(r)
                    print(
                        f"{size:>7} {kind:7} {users:>3} users: {r['rps']:7.1f} req/s  p50 {r['p50']:6.0f} ms  "
                        f"p99 {r['p99']:6.0f} ms  server CPU {r['cpu_ms']:.1f} ms/req  errors {r['errors']}/{r['requests']}  server {r['server_cores']:.2f} cores, locust {r['locust_cores']:.2f}  "
                        f"load {r['load']:.1f}{'  ' + r['locust_err'] if r['locust_err'] else ''}",
                        flush=True,
                    )
                    folded = out / f"{kind}-{users}.folded"
                    if folded.exists():
                        busy, own, under = top_frames(folded)
                        print(f"  py-spy, {kind} with {users} users: {busy:.0%} of the server's thread samples busy; of those,")
                        print("   own time in:")
                        for fn, share in own:
                            print(f"    {share:5.1%}  {fn}")
                        print("   under clipseek functions:")
                        for fn, share in under:
                            print(f"    {share:5.1%}  {fn}")
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
            print(f"server stopped (exit {rc})", flush=True)
    print("\n| records | query | users | req/s | p50 ms | p99 ms | errors / requests | server cores | server CPU ms/req | locust cores | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']:,} | {r['kind']} | {r['users']} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | "
            f"{r['errors']} / {r['requests']} | {r['server_cores']:.2f} | {r['cpu_ms']:.1f} | {r['locust_cores']:.2f} | {r['load']:.1f} |"
        )


if __name__ == "__main__":
    main()
