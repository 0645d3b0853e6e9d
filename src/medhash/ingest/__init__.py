"""Ingest: source folders (DICOM RT, OpenKBP) into the archive (:mod:`.pipeline`), pseudonymised on the way
when asked (:mod:`.pseudonymise`)."""
from .pipeline import (EXIT_ARCHIVE, EXIT_NO_INPUT, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, FORMATS, IngestReport,
                       detect_format, ingest)

__all__ = ["EXIT_ARCHIVE", "EXIT_NO_INPUT", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "FORMATS", "IngestReport",
           "detect_format", "ingest"]
