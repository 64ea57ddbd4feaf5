"""What a proxy adds to a download: sequential fetches of a small PNG from a loopback server,
direct and through the tests' forward proxy (tests/_proxy.py, a Python ThreadingHTTPServer that
re-fetches each request), alternated; and the cost of the target check a proxied URL gets here
(one local resolution of a name).

    python benchmarks/proxy_overhead.py            # 300 fetches per run, 3 runs each way
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _proxy import ForwardProxy  # noqa: E402
from test_downloads import FAST, RED, Server  # noqa: E402

from clipseek import net  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    srv = Server()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"{srv.base}/img/red/x.png"
    times: dict[str, list[float]] = {"direct": [], "proxy": []}
    try:
        with ForwardProxy() as p:
            for _ in range(args.runs):
                for name, proxy in (("direct", ""), ("proxy", p.url)):
                    with net.Downloader(FAST, allow_private=True, proxy=proxy) as d:
                        t0 = time.perf_counter()
                        for _ in range(args.n):
                            assert d.fetch(url) == RED
                        times[name].append((time.perf_counter() - t0) * 1000 / args.n)
            check = net.parse_proxy(p.url)
            t0 = time.perf_counter()
            for _ in range(args.n):
                net._check_target("example.invalid", 80, check)  # a name that does not resolve: left to the proxy
            unresolved = (time.perf_counter() - t0) * 1e6 / args.n
            t0 = time.perf_counter()
            for _ in range(args.n):
                try:
                    net._check_target("localhost", 80, check)
                except net._Refused:
                    pass
            resolved = (time.perf_counter() - t0) * 1e6 / args.n
    finally:
        srv.shutdown()
        srv.server_close()
    for name, ms in times.items():
        print(f"{name:6s} ms per fetch, median of {args.runs} runs of {args.n}: {statistics.median(ms):.2f} (runs: "
              + ", ".join(f"{m:.2f}" for m in ms) + ")")
    print(f"target check, one lookup: localhost (resolved, refused) {resolved:.0f} us; "
          f"example.invalid (unresolvable; then not asked again for {net.UNRESOLVED_TTL:g} s) {unresolved:.0f} us")


if __name__ == "__main__":
    main()
