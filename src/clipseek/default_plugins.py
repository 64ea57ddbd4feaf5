"""The built-in encoders and stores, registered exactly as a third-party plugin would."""

from __future__ import annotations

from typing import Callable

from .hookspecs import hookimpl


@hookimpl
def register_encoders(register: Callable[..., None]) -> None:
    from .encoders.hf import HFClipEncoder
    from .encoders.offline import OfflineEncoder

    register(OfflineEncoder)
    register(HFClipEncoder)  # CLIP / Chinese-CLIP / SigLIP: presets, hub ids, model directories


@hookimpl
def register_stores(register: Callable[..., None]) -> None:
    from .stores.local import LocalStore
    from .stores.memory import MemoryStore
    from .stores.milvus import MilvusStore  # imports pymilvus only when a store is opened

    register(LocalStore)
    register(MemoryStore)
    register(MilvusStore)
