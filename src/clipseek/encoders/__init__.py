"""Encoders turn images and texts into vectors of one shared space. See :class:`Encoder`."""

from .base import Calibration, Encoder

__all__ = ["Calibration", "Encoder"]
