"""Every exception medhash raises on purpose, with its CLI exit code and its HTTP status.

Each class says when it is raised and what to do about it. Messages name the file, the DICOM
element (tag and keyword) or the archive object concerned, quote the bad value and state the rule.

Messages are written for every interface: they never name a command-line flag. When an error is
about one parameter of the Python API, the raiser says which with ``param`` (the keyword name, e.g.
``"rerank"``); the CLI shows it as its option (``--rerank``), the web API as the request field.

=====================  =========  ======  ==========================================================
class                  exit code  HTTP    meaning
=====================  =========  ======  ==========================================================
MedhashError           1          422     base class: a request medhash cannot carry out
InputError             1          422     a file, folder or value given by the caller cannot be used
GeometryError          1          422     slices or grids whose geometry does not fit together
UnsupportedMediaType   1          415     an upload that is neither DICOM, PNG nor NPY
TrainingDataError      1          422     nothing in the archive a model could be trained on
IndexConfigError       1          422     index parameters that cannot work together
EngineError            1          422     a bad engine type or engine parameters
NotFoundError          1          404     a slice, patient, series, model or index that is not there
ArchiveError           3          500     the archive is missing, locked, not an archive, or damaged
ModelMismatchError     1          500     an index or features made by another model than the one found
NotFittedError         1          500     an estimator used before ``fit`` (a programming error)
MilvusError            1          503     the Milvus backend cannot be reached or does not match
=====================  =========  ======  ==========================================================

Exit codes of the CLI (:data:`EXIT_OK` ... :data:`EXIT_ADDRESS_IN_USE`) are defined here too.
"""
from __future__ import annotations

EXIT_OK = 0
"""Everything asked for was done."""
EXIT_PARTIAL = 1
"""Some items failed (each reported), or the request could not be carried out."""
EXIT_USAGE = 2
"""Bad command-line arguments (argparse's own code)."""
EXIT_ARCHIVE = 3
"""The archive cannot be opened or written."""
EXIT_NO_INPUT = 4
"""Nothing usable was found in the input."""
EXIT_ADDRESS_IN_USE = 5
"""The address to serve or listen on is taken (another program holds the port)."""


class MedhashError(Exception):
    """Base class of every error medhash raises on purpose.

    Parameters
    ----------
    message : str
        For people: what is wrong and what to do, naming no command-line flag.
    param : str, optional
        The Python API parameter the error is about (``"rerank"``, ``"dose"`` ...), when there is
        one; interfaces show it their own way (``--rerank`` on the command line).
    """

    exit_code: int = EXIT_PARTIAL
    """Exit status of the ``medhash`` command that fails with this error."""
    http_status: int = 422
    """HTTP status of the web API's answer; 4xx for the caller's errors, 5xx for the server's."""

    def __init__(self, message: str = "", *args, param: str | None = None):
        super().__init__(message, *args)
        self.param = param


class InputError(MedhashError, ValueError):
    """A source file or folder, or a value given by the caller, cannot be used as it is.

    Raised by the readers in :mod:`medhash.io` for one file or one series; ``medhash ingest``
    reports it with the path, skips that item and goes on with the rest of the run.
    """


class GeometryError(InputError):
    """Slices or grids whose geometry does not fit together (orientation, spacing, shape).

    Fix the series (or export it again) so that all slices share orientation, pixel spacing and
    matrix size.
    """


class UnsupportedMediaType(InputError):
    """An upload that is neither DICOM, PNG nor NPY."""

    http_status = 415


class TrainingDataError(MedhashError, ValueError):
    """The archive holds no slices a model could be trained on (empty archive, or no dose for the
    ``dose`` channel). Ingest data first."""


class IndexConfigError(MedhashError, ValueError):
    """An index cannot be built or used with the parameters given (the message says why)."""


class EngineError(MedhashError, ValueError):
    """Bad index type or engine parameters (the message says which and what is allowed)."""


class NotFoundError(MedhashError, KeyError):
    """A slice, patient, series, model or index named by the caller is not in the archive."""

    http_status = 404

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else ""


class ArchiveError(MedhashError, OSError):
    """The archive directory is missing, not an archive, locked by another writer, or damaged.

    The message names the archive path. Nothing already committed in the archive is changed.
    """

    exit_code = EXIT_ARCHIVE
    http_status = 500


class ModelMismatchError(MedhashError, ValueError):
    """Features, codes or an index were made by another model or hasher than the one found.

    Rebuild the index after training a model again. On a server this is the server's state, not
    the caller's request: HTTP 500.
    """

    http_status = 500


class NotFittedError(MedhashError, ValueError):
    """An estimator (hasher, index builder) was used before ``fit``. Call ``fit`` first."""

    http_status = 500


class AddressInUseError(MedhashError, OSError):
    """The host and port to serve (``medhash serve``) or listen on (``medhash listen``) are taken by
    another program; nothing was started."""

    exit_code = EXIT_ADDRESS_IN_USE
    http_status = 503


class MilvusError(MedhashError, RuntimeError):
    """Milvus is not installed, cannot be reached, or its collection does not match the index."""

    http_status = 503


def exit_code_of(exc: BaseException) -> int:
    """The CLI exit status for ``exc``: its class's :attr:`MedhashError.exit_code`, else
    :data:`EXIT_PARTIAL` (a ``ValueError`` from argument checking)."""
    return getattr(exc, "exit_code", EXIT_PARTIAL)


def http_status_of(exc: BaseException) -> int:
    """The HTTP status for ``exc``: its class's :attr:`MedhashError.http_status`, else 500."""
    return getattr(exc, "http_status", 500)
