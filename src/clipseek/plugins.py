"""The plugin manager and the registries it fills.

Nothing happens at import time: :func:`get_registry` builds the manager on first use, loading the
built-ins and every installed package's ``clipseek`` entry points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import UnknownPlugin

if TYPE_CHECKING:
    from .encoders.base import Encoder
    from .stores.base import VectorStore


@dataclass
class Registry:
    pm: pluggy.PluginManager
    encoders: dict[str, type[Encoder]] = field(default_factory=dict)
    stores: dict[str, type[VectorStore]] = field(default_factory=dict)

    def refresh(self) -> None:
        self.encoders.clear()
        self.stores.clear()
        self.pm.hook.register_encoders(register=lambda cls: self._add(self.encoders, cls))
        self.pm.hook.register_stores(register=lambda cls: self._add(self.stores, cls))

    @staticmethod
    def _add(table: dict[str, Any], cls: type) -> None:
        name = getattr(cls, "name", "")
        if not name:
            raise ValueError(f"{cls!r} has no 'name' to register under")
        table[name] = cls

    def encoder_class(self, name: str) -> type[Encoder]:
        try:
            return self.encoders[name]
        except KeyError:
            known = ", ".join(sorted(self.encoders))
            raise UnknownPlugin(f"unknown model {name!r}; available: {known}") from None

    def make_encoder(self, spec: str) -> Encoder:
        """An encoder instance for a registered name, or for a spec (preset, hub id, local
        directory) that one of the registered classes accepts through ``from_spec``."""
        if spec in self.encoders:
            return self.encoders[spec]()
        for cls in self.encoders.values():
            enc = cls.from_spec(spec)
            if enc is not None:
                return enc
        known = ", ".join(sorted(self.encoders))
        raise UnknownPlugin(f"unknown model {spec!r}; available: {known} (or a preset, hub id or model directory)")

    def store_class(self, name: str) -> type[VectorStore]:
        try:
            return self.stores[name]
        except KeyError:
            known = ", ".join(sorted(self.stores))
            raise UnknownPlugin(f"unknown store {name!r}; available: {known}") from None

    def register_plugin(self, plugin: Any, name: str | None = None) -> None:
        """Add a plugin object or module at run time (tests, embedding applications)."""
        self.pm.register(plugin, name=name)
        self.refresh()

    def unregister_plugin(self, plugin: Any) -> None:
        self.pm.unregister(plugin)
        self.refresh()


_registry: Registry | None = None


def get_registry() -> Registry:
    global _registry
    if _registry is None:
        pm = pluggy.PluginManager("clipseek")
        pm.add_hookspecs(hookspecs)
        from . import default_plugins

        pm.register(default_plugins, name="clipseek.default_plugins")
        pm.load_setuptools_entrypoints("clipseek")
        _registry = Registry(pm)
        _registry.refresh()
    return _registry
