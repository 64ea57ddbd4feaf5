"""Helpers to run `clipseek serve` as a subprocess in tests (used by ``conftest.serve``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

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
