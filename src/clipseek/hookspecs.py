"""Plugin hooks. Built-in encoders and stores register through these same hooks
(see :mod:`clipseek.default_plugins`), so the plugin path is exercised by every run.

A third-party package exposes a module under the ``clipseek`` entry-point group::

    [project.entry-points.clipseek]
    my_encoder = "my_package.clipseek_plugin"

and implements any of the hooks below with ``@clipseek.hookimpl``.
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("clipseek")
hookimpl = pluggy.HookimplMarker("clipseek")


@hookspec
def register_encoders(register: Callable[..., None]) -> None:
    """Call ``register(EncoderClass)`` for each Encoder subclass the plugin provides."""


@hookspec
def register_stores(register: Callable[..., None]) -> None:
    """Call ``register(StoreClass)`` for each VectorStore subclass the plugin provides."""
