"""Helpers to run `clipseek serve` as a subprocess in tests (used by ``conftest.serve``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

import clipseek

SRC = str(Path(clipseek.__file__).resolve().parents[1])  # the clipseek under test, for subprocesses


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    port: int
    home: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        """What the server wrote to stderr/stdout so far (JSON log lines)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (graceful shutdown), then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def server_env(home: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a ``clipseek`` subprocess runs with: this checkout's code, ``home`` as its
    data folder, no hub access, no config file from the developer's environment."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEEK_")}
    out["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [os.environ.get("PYTHONPATH")])])
    out["CLIPSEEK_HOME"] = str(home)
    out["HF_HUB_OFFLINE"] = "1"
    out.update(env or {})
    return out


def start_server(
    home: Path, log_path: Path, args: Sequence[str] = (), env: dict[str, str] | None = None, timeout: float = 60
) -> LiveServer:
    """``clipseek serve`` on 127.0.0.1 and a free port over the data folder ``home``, its output in
    ``log_path``; returns once ``/healthz`` answers (AssertionError with the log if it never does).
    The caller stops it (``LiveServer.stop``)."""
    port = free_port()
    full_env = server_env(home, env)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clipseek", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=home,  # no ./clipseek.toml of the developer's
        )
    srv = LiveServer(f"http://127.0.0.1:{port}", port, home, proc, log_path, full_env)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"clipseek serve exited with {proc.returncode}:\n{srv.log()}")
        try:
            if httpx.get(f"{srv.url}/healthz", timeout=2).status_code == 200:
                return srv
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            srv.stop()
            raise AssertionError(f"clipseek serve did not answer /healthz within {timeout} s:\n{srv.log()}")
        time.sleep(0.1)
