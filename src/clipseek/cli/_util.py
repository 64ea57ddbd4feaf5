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
