"""Helpers shared by the CLI modules."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from ..errors import ClipseekError


def fail_clean(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a ClipseekError into 'Error: <message>' and exit status 1, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClipseekError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def _check_proxy(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from ..net import parse_proxy

    if value is not None and value.strip():
        try:
            parse_proxy(value, "--proxy")
        except ClipseekError as e:
            raise click.UsageError(str(e), ctx) from None
    return value


def proxy_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--proxy URL`` for commands that download ``what``; ``--proxy ''`` ignores the environment's."""
    return click.option(
        "--proxy",
        metavar="URL",
        default=None,
        callback=_check_proxy,
        help=f"HTTP(S) proxy for {what}: http://[user:password@]host:port (or https://); '' for none, whatever the "
        "environment says [default: env CLIPSEEK_PROXY, else https_proxy / http_proxy / all_proxy, with no_proxy].",
    )
