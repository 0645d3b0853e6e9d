"""DICOM networking: :class:`Listener`, the storage SCP behind ``medhash listen``."""
from __future__ import annotations

from .listen import ACCEPTED_SOP_CLASSES, Listener

__all__ = ["ACCEPTED_SOP_CLASSES", "Listener"]
