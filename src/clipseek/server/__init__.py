"""The clipseek service: ``create_app(engine, settings)`` builds the FastAPI app that
``clipseek serve`` runs under uvicorn (the ``server`` extra)."""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
