"""Exceptions raised by medhash.

Each class says when it is raised and what to do about it. Messages name the file, the DICOM
element (tag and keyword) or the archive object concerned, quote the bad value and state the rule.
"""
from __future__ import annotations


class MedhashError(Exception):
    """Base class of every error medhash raises on purpose."""


class InputError(MedhashError, ValueError):
    """A source file or folder cannot be used as it is.

    Raised by the readers in :mod:`medhash.io` for one file or one series; ``medhash ingest``
    reports it with the path, skips that item and goes on with the rest of the run.
    """


class GeometryError(InputError):
    """Slices or grids whose geometry does not fit together (orientation, spacing, shape).

    Fix the series (or export it again) so that all slices share orientation, pixel spacing and
    matrix size.
    """


class ArchiveError(MedhashError, OSError):
    """The archive directory is missing, not an archive, locked by another writer, or damaged.

    The message names the archive path. Nothing already committed in the archive is changed.
    """


class NotFoundError(MedhashError, KeyError):
    """A slice, patient or series named by the caller is not in the archive."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else ""


class NotFittedError(MedhashError, ValueError):
    """An estimator (hasher, index builder) was used before ``fit``. Call ``fit`` first."""


class ModelMismatchError(MedhashError, ValueError):
    """Features, codes or an index were made by another model or hasher than the one asked for.

    Rebuild the index (``medhash index``) after training a model again.
    """
