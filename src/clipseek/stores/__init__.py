"""Vector stores keep records (id, unit vector, metadata) and answer nearest-neighbour queries."""

from .base import VectorStore

__all__ = ["VectorStore"]
