"""The archive folder: catalog and arrays (:mod:`.archive`), every path in it (:mod:`.layout`), and durable
file writes and locks (:mod:`.durable`)."""
from .archive import Archive
from .layout import CATALOG

__all__ = ["Archive", "CATALOG"]
