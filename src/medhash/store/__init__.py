"""The archive folder: catalog and arrays (:mod:`.archive`), every path in it (:mod:`.layout`), and
durable file writes and the file lock (:mod:`.durable`)."""
from .archive import AddResult, Archive
from .layout import CATALOG

__all__ = ["AddResult", "Archive", "CATALOG"]
