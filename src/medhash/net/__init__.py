"""DICOM networking: :class:`Listener`, the storage SCP behind ``medhash listen``, and
:mod:`.pull` (``medhash pull``: C-FIND + C-MOVE / C-GET, or DICOMweb) for pulling from a PACS."""
from __future__ import annotations

from .listen import ACCEPTED_SOP_CLASSES, Listener

__all__ = ["ACCEPTED_SOP_CLASSES", "Listener"]
