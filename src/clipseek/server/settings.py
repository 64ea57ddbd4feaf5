"""The service's settings: defaults, then ``clipseek.toml``, then ``CLIPSEEK_*`` environment
variables, then command-line options (each later source wins).

The configuration file is ``./clipseek.toml`` or the file named by ``CLIPSEEK_CONFIG``; its
``[server]`` table holds the keys of :class:`Settings` (see the README's "Configuration")::

    [server]
    host = "127.0.0.1"
    port = 8000
    roots = ["/data/captures"]       # server-side folders that may be indexed or added by path
    max_upload_mb = 20
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ClipseekError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_ENV = "CLIPSEEK_CONFIG"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str | None = None  # None: $CLIPSEEK_HOME or the default data folder
    roots: list[str] = field(default_factory=list)  # folders whose files may be indexed/added by path
    max_upload_mb: float = 20.0  # one uploaded image or file
    max_body_mb: float = 64.0  # any request body
    max_pixels: int = 50_000_000  # decoded pixels of one uploaded or fetched image
    max_top: int = 1000  # the largest `top` / `topK` a search may ask for
    max_batch: int = 1000  # records in one upsert / vectors in one request
    rate_limit: float = 0.0  # requests per second per key (or per client address without keys); 0: off
    rate_burst: int = 50  # requests a key may send at once before the rate applies
    cors_origins: list[str] = field(default_factory=list)  # empty: CORS off
    allow_private_urls: bool = False  # image URLs may reach loopback/private addresses
    # http(s) proxy for image URLs; "": none; None: the environment's (http_proxy, https_proxy, no_proxy ...)
    proxy: str | None = None
    auth: str = "auto"  # "auto": keys required unless on localhost with no key created; "on"; "off" (localhost only)
    log_json: bool = True
    # > 0: concurrent text/image queries arriving within this window share an encoder call; 0: off (the
    # default: with the offline model on 2 cores batching lost to concurrent calls, benchmarks/README.md)
    batch_window_ms: float = 0.0
    metrics_public: bool = False  # /metrics open to anyone who reaches the port (else: the same access as reads)
    model: str | None = None  # model for collections created through the API without one

    @property
    def local_only(self) -> bool:
        return self.host in LOCAL_HOSTS

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def root_paths(self) -> list[Path]:
        return [Path(r).expanduser().resolve() for r in self.roots]

    @classmethod
    def load(cls, path: str | Path | None = None, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults <- the config file's ``[server]`` table <- ``CLIPSEEK_<KEY>`` variables <- ``overrides``
        (None values in ``overrides`` are ignored). Unknown keys and bad values are errors naming their source."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        cfg = Path(path) if path else Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else Path("clipseek.toml")
        if path or env.get(CONFIG_ENV) or cfg.is_file():
            try:
                doc = tomllib.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as e:
                raise ClipseekError(f"cannot read configuration file {cfg}: {e}") from None
            except tomllib.TOMLDecodeError as e:
                raise ClipseekError(f"{cfg}: not valid TOML: {e}") from None
            section = doc.get("server", {})
            if not isinstance(section, dict):
                raise ClipseekError(f"{cfg}: [server] must be a table")
            values.update(_checked(section, f"{cfg} [server]"))
        names = {f.name for f in dataclasses.fields(cls)}
        from_env = {}
        for name in names:
            raw = env.get("CLIPSEEK_" + name.upper())
            if raw is not None and name != "data_dir":
                from_env[name] = _from_text(name, raw)
        if env.get("CLIPSEEK_HOME") and "data_dir" not in values:
            from_env["data_dir"] = env["CLIPSEEK_HOME"]
        values.update(_checked(from_env, "environment"))
        values.update(_checked({k: v for k, v in overrides.items() if v is not None}, "options"))
        return cls(**values)


def _types() -> dict[str, Any]:
    return {f.name: f.type for f in dataclasses.fields(Settings)}


def _from_text(name: str, raw: str) -> Any:
    kind = _types()[name]
    if "list" in kind:
        return [p for p in (s.strip() for s in raw.split(os.pathsep if name == "roots" else ",")) if p]
    if kind == "bool":
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ClipseekError(f"CLIPSEEK_{name.upper()}={raw!r}: expected true or false")
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ClipseekError(f"CLIPSEEK_{name.upper()}={raw!r}: expected a whole number") from None
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise ClipseekError(f"CLIPSEEK_{name.upper()}={raw!r}: expected a number") from None
    return raw


def _checked(values: dict[str, Any], source: str) -> dict[str, Any]:
    types = _types()
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in types:
            known = ", ".join(sorted(types))
            raise ClipseekError(f"{source}: unknown setting {key!r} (known: {known})")
        kind = types[key]
        ok = (
            (kind == "bool" and isinstance(value, bool))
            or (kind == "int" and isinstance(value, int) and not isinstance(value, bool))
            or (kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool))
            or ("list" in kind and isinstance(value, list) and all(isinstance(v, str) for v in value))
            or (kind.startswith("str") and (isinstance(value, str) or (value is None and "None" in kind)))
        )
        if not ok:
            raise ClipseekError(f"{source}: setting {key!r} must be {kind}, got {value!r}")
        if key == "auth" and value not in ("auto", "on", "off"):
            raise ClipseekError(f"{source}: auth must be 'auto', 'on' or 'off', got {value!r}")
        if key == "proxy" and value:
            from ..net import parse_proxy

            parse_proxy(value, {"environment": "CLIPSEEK_PROXY", "options": "--proxy"}.get(source, f"{source} proxy"))
        if kind in ("int", "float") and value < 0:
            raise ClipseekError(f"{source}: setting {key!r} must not be negative, got {value!r}")
        out[key] = float(value) if kind == "float" else value
    return out
