"""A real Milvus standalone server for the tests, from the PyPI package ``milvus`` (2.3.x).

    python tests/_milvus_server.py start --data /tmp/mv --port 19530   # background; prints the URI when ready
    python tests/_milvus_server.py stop --data /tmp/mv                 # stops it (and everything it started)

``.ci/run`` starts one for the session; the fault tests start their own (``MilvusProcess``) on other
ports and stop it in the middle of an ingest. The package's own launcher binds the embedded etcd's
peer port 2380 on every server (so two cannot run at once) and leaves the server behind when it
is killed; this one gives every port its own number, runs the server in its own process group,
and stops it by that group.

Settings beyond the package's template (``SETTINGS``): growing segments are searched exactly
(no interim IVF index, whose fixed nprobe misses true neighbours of fresh records), a graceful
stop takes at most 10 s, and the proxy ticks every 50 ms instead of 200 (a strong read waits for
the next tick: see docs/scaling.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SETTINGS = {
    "queryNode.segcore.interimIndex.enableIndex": "false",
    "common.gracefulStopTimeout": "10",
    "proxy.timeTickInterval": "50",
    "queryCoord.checkInterval": "100",  # a collection loads in ~0.3 s instead of 2.5 (tests make hundreds)
    "queryCoord.distPullInterval": "100",
}


def _free_port(start: int, taken: set[int]) -> int:
    for port in range(start, start + 2000):
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError(f"no free port from {start}")


class MilvusProcess:
    """One server: ``start()`` returns once it answers, ``stop()`` ends it; the data directory
    survives, so a second ``start()`` is a restart on the same data."""

    def __init__(
        self, data: Path, port: int = 19530, settings: dict[str, str] | None = None, own_group: bool = True
    ) -> None:
        self.own_group = own_group  # False: the server stays in the caller's process group
        self.data = Path(data).resolve()
        self.port = port or _free_port(19530, set())  # 0: the first free port from 19530
        self.settings = {**SETTINGS, **(settings or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self._launch: tuple[str, dict[str, str]] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _configure(self) -> tuple[str, dict[str, str]]:
        from milvus import MilvusServerConfig, _initialize_data_files

        taken = {self.port}
        cfg = MilvusServerConfig(data_dir=str(self.data))
        ports = {"proxy_port": self.port}
        for key, (_type, default) in cfg.configurable_items.items():
            if key.endswith("_port") and key != "proxy_port":
                ports[key] = _free_port(int(default or 40000), taken)
        cfg.update(**ports)
        for key, value in self.settings.items():
            cfg.set(key, value)
        cfg.resolve()
        _initialize_data_files(cfg.base_data_dir)
        peer = _free_port(2380, taken)
        metrics = _free_port(9091, taken)
        etcd = ports["etcd_port"]
        etcd_conf = self.data / "configs" / "embed-etcd.yaml"
        etcd_conf.write_text(
            "name: default\n"
            f"listen-client-urls: http://127.0.0.1:{etcd}\n"
            f"advertise-client-urls: http://127.0.0.1:{etcd}\n"
            f"listen-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-cluster: default=http://127.0.0.1:{peer}\n"
        )
        self.ports = {**ports, "etcd_peer": peer, "metrics": metrics}
        exe = str(Path(cfg.base_data_dir) / "bin" / "milvus")
        env = dict(os.environ)
        env.update(
            DEPLOY_MODE="STANDALONE",
            METRICS_PORT=str(metrics),
            MILVUS_RUN_DIR=str(self.data / "run"),
            ETCD_CONFIG_PATH=str(etcd_conf),
            LD_LIBRARY_PATH=":".join([str(Path(exe).parent), os.environ.get("LD_LIBRARY_PATH", "")]),
        )
        return exe, env

    def start(self, timeout: float = 240.0) -> str:
        if self._launch is None:  # a restart reuses the ports and config (a killed server's ports may
            self._launch = self._configure()  # be in TIME_WAIT, which the package's bind check refuses)
        exe, env = self._launch
        logs = self.data / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "milvus-stdout.log", "ab") as out, open(logs / "milvus-stderr.log", "ab") as err:
            self.proc = subprocess.Popen(
                [exe, "run", "standalone"], cwd=self.data, env=env, stdout=out, stderr=err,
                start_new_session=self.own_group,
            )
        deadline = time.monotonic() + timeout
        health = f"http://127.0.0.1:{self.ports['metrics']}/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milvus exited with {self.proc.returncode}; see {logs}")
            try:
                with urllib.request.urlopen(health, timeout=2) as resp:
                    if b"OK" in resp.read():
                        self._wait_for_proxy(deadline)
                        return self.uri
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"milvus did not answer within {timeout:.0f} s; see {logs}")

    def _wait_for_proxy(self, deadline: float) -> None:
        from pymilvus import connections, utility

        alias = f"probe-{self.port}"
        while True:
            try:
                connections.connect(alias, uri=self.uri, timeout=5)
                utility.get_server_version(using=alias, timeout=5)
                return
            except Exception:  # noqa: BLE001
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
            finally:
                connections.disconnect(alias)

    def stop(self, timeout: float = 30.0, kill: bool = False) -> None:
        """SIGTERM (SIGKILL with ``kill``: a crash) to the server's process group, then SIGKILL
        to whatever is left after ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        def send(sig: int) -> None:
            try:
                if self.own_group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
            except ProcessLookupError:
                pass

        send(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        send(signal.SIGKILL)  # anything of its group still there
        proc.wait()

    def __enter__(self) -> MilvusProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------ command line


def _run(data: Path, port: int) -> int:
    """Foreground: start the server, write ``uri`` once it answers, stop it on SIGTERM/SIGINT."""
    server = MilvusProcess(data, port, own_group=False)  # in the launcher's group: `stop` reaches both
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        uri = server.start()
        (data / "uri").write_text(uri)
        while not stopping and server.proc is not None and server.proc.poll() is None:
            time.sleep(0.2)
    finally:
        server.stop()
        (data / "uri").unlink(missing_ok=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["start", "stop", "run"])
    ap.add_argument("--data", required=True, type=Path, help="the server's data and log directory")
    ap.add_argument("--port", type=int, default=19530, help="the gRPC port (0: the first free one from 19530)")
    ap.add_argument("--timeout", type=float, default=240.0)
    args = ap.parse_args()
    data = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    pid_file = data / "launcher.pid"
    if args.action == "run":
        return _run(data, args.port)
    if args.action == "start":
        (data / "uri").unlink(missing_ok=True)
        with open(data / "launcher.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, __file__, "run", "--data", str(data), "--port", str(args.port)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if (data / "uri").is_file():
                print((data / "uri").read_text())
                return 0
            if proc.poll() is not None:
                sys.stderr.write((data / "launcher.log").read_text(errors="replace")[-3000:])
                return 1
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGTERM)
        sys.stderr.write(f"milvus did not start within {args.timeout:.0f} s; logs in {data / 'logs'}\n")
        return 1
    # stop
    if not pid_file.is_file():
        return 0
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink()
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
