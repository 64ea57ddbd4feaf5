"""``clipseek serve`` (the REST API, the Pinecone-compatible API and the web page under uvicorn)
and ``clipseek keys`` (API keys for it)."""

from __future__ import annotations

import json
import logging
import signal
from typing import Any

import click

from ..errors import ClipseekError
from ._util import fail_clean, proxy_option


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message and any structured extras."""

    _skip = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in self._skip})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def log_config(json_logs: bool, level: str = "INFO") -> dict[str, Any]:
    fmt: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if json_logs else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": fmt},
        "handlers": {"default": handler},
        "loggers": {
            "clipseek": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            # clipseek logs each request itself, with its request id
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


@click.command()
@click.option("--host", default=None, help="Address to listen on [default 127.0.0.1; config `host`, env CLIPSEEK_HOST].")
@click.option("--port", type=int, default=None, help="Port [default 8000; config `port`, env CLIPSEEK_PORT].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="Configuration file [default ./clipseek.toml or $CLIPSEEK_CONFIG].")
@click.option("--root", "roots", multiple=True, help="A folder whose files may be indexed or added by server-side path (repeatable).")
@click.option("--allow-private-urls", is_flag=True, default=None, help="Let image URLs reach loopback, link-local and private addresses.")
@proxy_option("image URLs (config `proxy`)")
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow browser pages from this origin (repeatable; CORS is off by default).")
@click.option("--log-json/--log-text", default=None, help="Structured JSON log lines (default) or plain text.")
@click.pass_obj
@fail_clean
def serve(obj: Any, host: str | None, port: int | None, config_path: str | None, roots: tuple[str, ...],
          allow_private_urls: bool | None, proxy: str | None, cors_origins: tuple[str, ...], log_json: bool | None) -> None:
    """Serve the web page (/), the REST API (/v1, docs at /docs) and the Pinecone-compatible API
    (/pinecone) from this machine's collections.

    \b
    On localhost with no API key created, access is open. Listening on any other address needs
    API keys: create one first with `clipseek keys create`.
    """
    try:
        import uvicorn

        from ..server import Settings, create_app
    except ImportError as e:
        raise ClipseekError(f"the server needs its extra: pip install 'clipseek[server]' ({e.name} is missing)") from None
    settings = Settings.load(
        config_path,
        host=host,
        port=port,
        data_dir=obj.data_dir,
        roots=list(roots) or None,
        allow_private_urls=allow_private_urls,
        proxy=proxy,
        cors_origins=list(cors_origins) or None,
        log_json=log_json,
    )
    from ..net import proxies_from

    proxies_from(settings.proxy)  # a malformed https_proxy & co. stops the start, not every URL request
    app = create_app(None, settings)
    state = app.state.clipseek
    if settings.auth != "off" and not state.keys.list() and (settings.auth == "on" or not settings.local_only):
        raise ClipseekError(
            f"refusing to serve on {settings.host} without API keys: anyone who can reach it could read and change "
            "your collections. Create a key with `clipseek keys create` (or listen on 127.0.0.1)"
        )
    click.echo(f"clipseek: serving {state.engine.data_dir} on http://{_url_host(settings.host)}:{settings.port}", err=True)
    # On SIGTERM uvicorn stops gracefully (no new connections, in-flight requests finish, then the app's
    # lifespan closes the engine), puts back the handler it found and raises the signal again for it.
    # That handler ends the process with status 0: a requested, orderly stop (not death by a signal).
    signal.signal(signal.SIGTERM, _stopped)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=log_config(settings.log_json),
        timeout_graceful_shutdown=30,
        limit_concurrency=1000,
    )


def _stopped(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _key_store(obj: Any) -> Any:
    """The key file of the data folder the server would use (options, environment, clipseek.toml)."""
    from ..engine import Engine
    from ..server import Settings
    from ..server.keys import KeyStore

    data_dir = Settings.load(data_dir=obj.data_dir).data_dir
    return KeyStore(Engine(data_dir).data_dir / "keys.json")


@click.group()
def keys() -> None:
    """API keys for `clipseek serve` (stored hashed in the data folder's keys.json)."""


@keys.command("create")
@click.option("--name", default="", help="A label to recognise the key by.")
@click.option("--read-only", is_flag=True, help="The key may search and read, not change anything.")
@click.option("--json", "as_json", is_flag=True, help="Print the key and its id as JSON.")
@click.pass_obj
@fail_clean
def keys_create(obj: Any, name: str, read_only: bool, as_json: bool) -> None:
    """Create a key and print it once (only its hash is kept)."""
    key, info = _key_store(obj).create(name=name, read_only=read_only)
    if as_json:
        click.echo(json.dumps({"key": key, "id": info.id, "name": info.name, "read_only": info.read_only}))
        return
    click.echo(key)
    kind = "read-only" if read_only else "read-write"
    click.echo(f"({kind} key {info.id}; shown once: store it now. Send it as 'Authorization: Bearer <key>')", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@fail_clean
def keys_list(obj: Any, as_json: bool) -> None:
    """List keys (ids and names; the keys themselves are not stored)."""
    rows = _key_store(obj).list()
    if as_json:
        click.echo(json.dumps([{"id": k.id, "name": k.name, "read_only": k.read_only, "created_at": k.created_at} for k in rows]))
        return
    if not rows:
        click.echo("no API keys (a server on localhost is open to local users)")
    for k in rows:
        click.echo(f"{k.id}  {'read-only ' if k.read_only else 'read-write'}  {k.created_at}  {k.name}")


@keys.command("revoke")
@click.argument("key_id")
@click.pass_obj
@fail_clean
def keys_revoke(obj: Any, key_id: str) -> None:
    """Revoke a key by its id (see `clipseek keys list`); servers refuse it at once."""
    info = _key_store(obj).revoke(key_id)
    click.echo(f"revoked {info.id} {info.name}".rstrip(), err=True)


__all__ = ["keys", "serve"]
