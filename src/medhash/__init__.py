"""medhash: content-based image retrieval for radiotherapy.

Public API::

    from medhash import Archive
    arch = Archive("archive", create=True)
    report = medhash.ingest(arch, ["/data/export"])   # DICOM RT or OpenKBP
    s = arch.get("pt_1", 60)                       # a Slice: .ct (HU), .dose (Gy), .masks
    res = medhash.search(arch, "pt_1:60", k=10)    # after `medhash train` and `medhash index`
"""
# first: the thread policy (OMP_WAIT_POLICY ...) must be in the environment before faiss or torch loads
from . import threads  # noqa: F401  isort: skip

from .core.grid import GRID_SIZE, GRID_SPACING_MM
from .core.records import Problem, Slice, Volume
from .errors import ArchiveError, GeometryError, InputError, MedhashError, NotFoundError
from .hashing import KernelLSH
from .ingest import IngestReport, ingest
from .retrieval import search, search_many
from .store import Archive

from .version import __version__

__all__ = ["Archive", "ArchiveError", "GeometryError", "GRID_SIZE", "GRID_SPACING_MM", "IngestReport",
           "InputError", "KernelLSH", "MedhashError", "NotFoundError", "Problem", "Slice", "Volume", "ingest",
           "search", "search_many", "__version__"]
