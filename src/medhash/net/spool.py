"""The spool folder (``ARCHIVE/spool``, :func:`medhash.store.layout.spool_dir`): received files on disk
before they are ingested.

::

    ARCHIVE/spool/.lock                            held by the one listener receiving into the archive
    ARCHIVE/spool/<association>.<n>/<SOP>.dcm       one folder per study of an association
    ARCHIVE/spool/failed/<association>.<n>/         files that could not be ingested, and problems.txt

This module owns writing a received file durably (:func:`write_atomic`), reading the study it belongs to
from its header (:func:`read_study_key`), finding files a power cut left cut short
(:func:`spooled_file_complete`), what a killed listener left (:func:`left_behind`) and the set-aside of
damaged files (:func:`set_aside`).
"""
from __future__ import annotations

import os
import re
import shutil
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom import filereader

from ..io.dicom import COMPRESSED_SYNTAXES, walk_elements
from ..store.durable import RENAME_DURABLE_WITH_FILE, filesystem_type, fsync_dir
from .dicom_tuning import file_meta_bytes

LOCK = ".lock"
"""The spool's lock file: held by the one listener receiving into the archive."""
FAILED = "failed"
"""Sub-folder of the spool where files that could not be ingested are set aside."""
PART = ".part"
"""Suffix of a file being written (never acknowledged): dropped at the next start."""
PROBLEMS = "problems.txt"
"""File beside the set-aside files: one line ``<file>: <reason>`` each."""
CUT_SHORT = ("cut short (the data set does not end after its last element); not acknowledged if the listener "
             "stopped in a power cut; not ingested")


def safe_name(uid: str) -> str:
    """A file name made of a UID sent by the peer (no path separators or other surprises)."""
    return re.sub(r"[^0-9A-Za-z._-]", "_", uid.strip().strip("\0")) or "instance"


def rename_durable_with_file(folder: Path) -> bool:
    """True when ``folder`` is on a filesystem where :func:`write_atomic` can make a file and its new
    name durable with one fsync (:data:`~medhash.store.durable.RENAME_DURABLE_WITH_FILE`)."""
    return filesystem_type(folder) in RENAME_DURABLE_WITH_FILE


def write_atomic(path: Path, *chunks: bytes, rename_durable_with_file: bool = False) -> None:
    """Write the concatenated ``chunks`` to ``path`` so that the file is complete and on disk, under
    its name, when this returns; a process killed before leaves at most ``path`` + ``.part``.

    The file is written under a temporary name and renamed once complete. Then, by default, the file is
    fsynced before the rename and its folder after it (two journal commits), as
    :func:`medhash.store.durable.replace_atomically` does. With ``rename_durable_with_file`` (for the
    filesystems of :data:`~medhash.store.durable.RENAME_DURABLE_WITH_FILE`) the file is renamed first and
    fsynced once, which makes its data and its new name durable together (one commit, 0.1-0.3 ms less a
    file here). A power cut between that rename and the fsync can leave a file cut short under its name
    (never acknowledged): :func:`spooled_file_complete` finds it. The temporary name is fixed
    (``path`` + ``.part``) and the open file descriptor is fsynced: one open, one fsync a file.
    """
    tmp = path.with_name(path.name + PART)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for data in chunks:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        if rename_durable_with_file:
            os.replace(tmp, path)
            os.fsync(fd)
            return
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def make_folder(spool: Path, folder: Path) -> None:
    """Create a study folder in the spool, its entry durable before a file in it is acknowledged."""
    if not folder.exists():
        folder.mkdir(parents=True)
        fsync_dir(spool)


_STUDY_TAGS = (0x0020000D, 0x00200052)  # StudyInstanceUID, FrameOfReferenceUID
_PLAIN_SYNTAXES = {"1.2.840.10008.1.2": (True, True), "1.2.840.10008.1.2.1": (False, True),
                   "1.2.840.10008.1.2.2": (False, False),
                   # encapsulated (compressed) pixel data: the data set itself is explicit VR little endian;
                   # the header is read up to the study, long before the Pixel Data (of undefined length)
                   **{uid: (False, True) for uid in COMPRESSED_SYNTAXES}}
"""Transfer syntaxes whose data set is read as is: UID -> (implicit VR, little endian)."""


def _study_key_walked(raw, implicit: bool) -> str | None:
    """:func:`read_study_key` for a little-endian data set by walking its element headers (about 20
    times faster than pydicom's reader); None when the walk is not sure (then pydicom reads it)."""
    found: dict[int, bytes] = {}
    if walk_elements(raw, 0, implicit, stop=_STUDY_TAGS[1], capture=_STUDY_TAGS, found=found) < 0:
        return None
    values = []
    for tag in _STUDY_TAGS:
        try:
            value = found.get(tag, b"").decode("ascii").strip("\0 ")
        except UnicodeDecodeError:
            return None
        if "\\" in value:  # several values: pydicom's reading decides what that means
            return None
        values.append(value)
    return values[0] or values[1]


def read_study_key(raw: bytes, transfer_syntax: str) -> str:
    """StudyInstanceUID, else FrameOfReferenceUID, of an encoded data set ('' when it has neither).

    Only the header up to (0020,0052) is read: by walking the element headers for the little-endian
    syntaxes, else with pydicom's reader (which stops there too). A deflated data set is read with its
    file meta, and so is whatever the walk is not sure about.
    """
    plain = _PLAIN_SYNTAXES.get(str(transfer_syntax))
    if plain is not None and plain[1]:
        key = _study_key_walked(raw, implicit=plain[0])
        if key is not None:
            return key
    if plain is None:
        ds = pydicom.dcmread(BytesIO(file_meta_bytes("1.2.3", "1.2.3", transfer_syntax) + raw),
                             stop_before_pixels=True, specific_tags=list(_STUDY_TAGS))
    else:
        ds = filereader.read_dataset(BytesIO(raw), *plain, stop_when=lambda tag, vr, length: tag > _STUDY_TAGS[1],
                          defer_size=4096)
    return str(ds.get("StudyInstanceUID", "") or ds.get("FrameOfReferenceUID", "") or "").strip("\0 ")


def spooled_file_complete(path: Path) -> bool:
    """False when a spooled file is cut short: its data set does not end exactly after its last element
    (or it has no data set). What a power cut can leave when :func:`write_atomic` renamed the file before
    its fsync ended (such a file was never acknowledged): a prefix of whole 4 KiB blocks, which ends inside
    the pixel data or a sequence; only a cut falling exactly between two top-level elements of the header
    would pass, and ingest then reports that file. Files in a deflated or big-endian transfer syntax are
    not walked (True): ingest reads them and reports what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError:
        return False
    if len(raw) < 132 or raw[128:132] != b"DICM":
        return False
    meta: dict[int, bytes] = {}
    start = walk_elements(raw, 132, False, stop=0x0002FFFF, capture=(0x00020010,), found=meta)
    if start < 0 or start == len(raw):
        return False
    syntax = meta.get(0x00020010, b"").decode("ascii", "replace").strip("\0 ")
    plain = _PLAIN_SYNTAXES.get(syntax)
    if plain is None or not plain[1]:
        return True
    return walk_elements(raw, start, plain[0], stop=None) == len(raw)


def set_aside(spool: Path, path: Path, reason: str) -> Path:
    """Move the spooled file ``path`` to ``spool/failed/<its folder>/`` and add ``reason`` to the
    ``problems.txt`` there; returns the file's new path."""
    dest = spool / FAILED / path.parent.name
    dest.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest / path.name)
    with open(dest / PROBLEMS, "a", encoding="utf-8") as fh:
        fh.write(f"{path.name}: {reason}\n")
    return dest / path.name


def folder_study_key(folder: Path) -> str:
    """The study key (StudyInstanceUID, else FrameOfReferenceUID) of the files of a spool folder, read
    from the first file that has one; the folder's name when none does (a folder left by a killed run
    is then still ingested, by itself)."""
    for path in sorted(folder.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_STUDY_TAGS))
        except Exception:  # damaged: ingest reports it; the key comes from another file
            continue
        key = str(ds.get("StudyInstanceUID", "") or ds.get("FrameOfReferenceUID", "") or "").strip("\0 ")
        if key:
            return key
    return folder.name


def left_behind(spool: Path) -> tuple[list[tuple[Path, int]], int]:
    """What an earlier (killed) run left in the spool, made ready to ingest.

    Half-written files (``*.part``, never acknowledged) are deleted, files cut short under their own name
    (:func:`spooled_file_complete`) are set aside (:func:`set_aside`), and empty folders are removed.

    Returns
    -------
    folders : list of (folder, number of files), in name order
    cut_short : int, the number of files set aside
    """
    left: list[tuple[Path, int]] = []
    cut_short = 0
    for folder in sorted(p for p in spool.iterdir() if p.is_dir() and p.name != FAILED):
        for part in folder.glob("*" + PART):
            part.unlink()
        for path in folder.glob("*.dcm"):
            if not spooled_file_complete(path):  # a power cut between rename and fsync (write_atomic)
                set_aside(spool, path, CUT_SHORT)
                cut_short += 1
        files = sum(1 for f in folder.iterdir() if f.is_file())
        if files == 0:
            shutil.rmtree(folder, ignore_errors=True)
            continue
        left.append((folder, files))
    return left, cut_short
