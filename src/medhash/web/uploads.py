"""Uploaded query files: their kind by content, a safe label for the client's file name, and the
:class:`~medhash.retrieval.Query` read from them in a private temporary folder.

No client file name is ever used as a path: uploads are written under fixed names and deleted after
the request; messages name the upload, never the server's temporary path.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path, PurePosixPath

from ..errors import InputError, MedhashError, UnsupportedMediaType

SUFFIX = {"dicom": ".dcm", "png": ".png", "npy": ".npy"}
"""The file suffix an upload of each kind is written with (the readers go by suffix)."""


def sniff(head: bytes) -> str | None:
    """The kind of an upload from its first bytes: ``"dicom"``, ``"png"``, ``"npy"`` or None.

    DICOM: ``DICM`` at byte 128 (Part 10), or a data set without preamble that starts with a
    group-0x0008 tag (as some old RT exports do). PNG and NPY: their magic numbers.
    """
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[128:132] == b"DICM" or head[:2] in (b"\x08\x00", b"\x00\x08"):
        return "dicom"
    return None


def label(filename: str | None, default: str) -> str:
    """A client's file name reduced to a label (never used as a path)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    name = re.sub(r"[^\w.\- ]", "_", name)[:120]
    return name or default


def check_kinds(data: bytes, name: str, dose: bytes | None, dose_name: str | None) -> tuple[str, str | None]:
    """The kinds of the query and dose uploads; UnsupportedMediaType or InputError when they cannot
    be used (together)."""
    kind = sniff(data[:132])
    if kind is None:
        raise UnsupportedMediaType(f"{name}: unsupported file type; upload a DICOM CT slice, a PNG or an NPY "
                                   "image (recognised by content: DICM at byte 128, the PNG or the NPY magic)")
    if dose is None:
        return kind, None
    dose_kind = sniff(dose[:132])
    if dose_kind is None:
        raise UnsupportedMediaType(f"{dose_name}: unsupported dose file type; upload an RTDOSE (DICOM) or a "
                                   "PNG or NPY dose image in Gy", param="dose")
    if (kind == "dicom") != (dose_kind == "dicom"):
        raise InputError(f"{dose_name}: with a {kind.upper()} query the dose must be "
                         + ("an RTDOSE (DICOM) file" if kind == "dicom" else "a PNG or NPY image in Gy"),
                         param="dose")
    return kind, dose_kind


def search_upload(archive, search, data: bytes, name: str, dose: bytes | None, dose_name: str | None):
    """Read the uploaded query (and dose) and answer ``search(query)``.

    Parameters
    ----------
    archive : Archive
        The server's archive (the reader checks the query against its grid).
    search : callable
        ``search(query) -> dict``, run while the uploads still exist.
    data, dose : bytes
        The uploaded query and dose (None: no dose).
    name, dose_name : str
        Their labels (see :func:`label`): messages name them instead of the temporary paths.
    """
    from ..retrieval import parse_query  # start-up: faiss and the readers only when searching

    kind, dose_kind = check_kinds(data, name, dose, dose_name)
    with tempfile.TemporaryDirectory(prefix="medhash-upload-") as tmp:
        qpath = Path(tmp) / ("query" + SUFFIX[kind])
        qpath.write_bytes(data)
        names = {str(qpath): name, tmp: "upload"}
        dpath = None
        if dose is not None:
            dpath = Path(tmp) / ("dose" + SUFFIX[dose_kind])
            dpath.write_bytes(dose)
            names[str(dpath)] = dose_name or "dose"
        try:
            query = parse_query(archive, qpath, dose=dpath)
        except MedhashError as exc:
            raise _renamed(exc, names) from None
        except Exception as exc:  # a reader tripped over malformed content: the client's file, not a bug
            raise InputError(_rename(f"{qpath}: cannot read this {kind.upper()} file "
                                     f"({type(exc).__name__}: {exc})", names)) from None
        query.info["file"] = name
        if dose is not None:
            query.info["dose_file"] = dose_name
        try:
            return search(query)
        except MedhashError as exc:
            raise _renamed(exc, names) from None


def _rename(message: str, names: dict[str, str]) -> str:
    """``message`` with each server path replaced by the upload's name (longest paths first)."""
    for path in sorted(names, key=len, reverse=True):
        message = message.replace(path, names[path])
    return message


def _renamed(exc: MedhashError, names: dict[str, str]) -> MedhashError:
    """The same error (class and param) with the upload names for the server's paths."""
    return type(exc)(_rename(str(exc), names), param=exc.param)
