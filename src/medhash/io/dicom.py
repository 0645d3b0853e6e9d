"""DICOM RT reader: CT series, RTDOSE and RTSTRUCT from folders → :class:`~medhash.core.records.Volume`.

Steps (each file's header is read first, without pixel data, to group):

1. Walk the folders; read headers (``stop_before_pixels``). Files without the ``DICM`` prefix are
   tried once more only if they start like a DICOM data set (group 0x0008), as some old RT exports
   do. Anything else is reported as "not DICOM".
2. Group CT slices by SeriesInstanceUID; keep the largest group with one orientation, pixel spacing
   and matrix size (a localizer in the same series is reported and left out); order slices by
   ImagePositionPatient projected on the slice normal (never by file name or InstanceNumber);
   report missing slices and uneven spacing with the z positions concerned.
3. HU = stored value x RescaleSlope + RescaleIntercept (PS3.3 C.11.1.1.2).
4. RTDOSE matched by FrameOfReferenceUID: Gy = stored value x DoseGridScaling; frame positions from
   GridFrameOffsetVector, relative (first element 0) or absolute (PS3.3 C.8.8.3.2); resampled
   trilinearly in patient coordinates onto the model grid of every CT slice, 0 Gy outside the dose
   grid. Several RTDOSE for one frame of reference: DoseSummationType PLAN is preferred, then the
   largest grid; the choice is recorded.
5. RTSTRUCT matched by FrameOfReferenceUID: contours rasterised on the model grid
   (:mod:`medhash.io.rtstruct`).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import re
import struct
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pydicom
from pydicom.datadict import dictionary_description, tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from scipy import ndimage

from ..errors import InputError
from ..core.grid import GRID_SIZE, GRID_SPACING_MM, PlaneGeometry, place_grid, stack_to_grid
from ..core.records import Problem, Volume
from .rtstruct import rasterise_structure_set

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

_ORIENT_TOL = 1e-4


def describe(keyword: str) -> str:
    """``(gggg,eeee) 'Name'`` for a DICOM keyword, as pydicom writes it in its messages."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return repr(keyword)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) '{dictionary_description(tag)}'"


def require(ds: pydicom.Dataset, keyword: str, path: str | Path, *, why: str = "") -> object:
    """The value of ``keyword`` in ``ds``, or an :class:`InputError` naming file and element."""
    value = ds.get(keyword, None)
    if value is None or value == "":
        extra = f": {why}" if why else ""
        raise InputError(f"{path}: {describe(keyword)} is missing{extra}")
    return value


@dataclass
class DicomScan:
    """Headers of the DICOM files found under the sources, grouped by kind."""

    ct: dict[str, list[tuple[Path, pydicom.Dataset]]] = field(default_factory=lambda: defaultdict(list))
    dose: list[tuple[Path, pydicom.Dataset]] = field(default_factory=list)
    struct: list[tuple[Path, pydicom.Dataset]] = field(default_factory=list)
    plans: int = 0
    files: int = 0
    not_dicom: int = 0
    other: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    problems: list[Problem] = field(default_factory=list)
    pixel_offsets: dict[Path, int] = field(default_factory=dict)
    """Byte offset of the Pixel Data element of each file read (where the header stopped)."""


def iter_files(sources: Iterable[str | Path]) -> Iterator[Path]:
    """Every regular file under the sources (files given directly are yielded as they are), sorted."""
    for src in sources:
        src = Path(src)
        if src.is_file():
            yield src
            continue
        for root, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(files):
                yield Path(root) / name


def _looks_like_dataset(path: Path) -> bool:
    """True when a file without preamble starts with a group-0x0008 tag (old RT exports)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and head[:2] in (b"\x08\x00", b"\x00\x08")


def read_header(path: Path, offsets: dict[Path, int] | None = None) -> pydicom.Dataset:
    """The data set of ``path`` without pixel data; raises InputError when it is not DICOM.

    With ``offsets``, ``offsets[path]`` is set to the byte offset where the header stopped (the Pixel
    Data element, if the file has one), so that :func:`attach_pixel_data` can read it later without
    parsing the header again.
    """
    try:
        if offsets is None:
            return pydicom.dcmread(path, stop_before_pixels=True)
        with open(path, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            offsets[path] = fh.tell()
            return ds
    except InvalidDicomError:
        if not _looks_like_dataset(path):
            raise InputError(f"{path}: not a DICOM file (no 'DICM' prefix at byte 128); skipped") from None
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception as exc:  # pydicom raises many types on garbage
            raise InputError(f"{path}: not a readable DICOM file ({exc}); skipped") from None
        if "SOPClassUID" not in ds:
            raise InputError(f"{path}: not a DICOM file (no 'DICM' prefix, no SOP Class UID); skipped")
        return ds
    except Exception as exc:
        raise InputError(f"{path}: cannot read DICOM header ({type(exc).__name__}: {exc}); "
                         "the file may be truncated or corrupt; skipped") from None


def scan(sources: Iterable[str | Path], progress: bool = False) -> DicomScan:
    """Read the headers of every file under ``sources`` and sort them by kind.

    Problems (unreadable files, unsupported objects) are collected in ``.problems``.
    """
    from tqdm import tqdm

    out = DicomScan()
    files = list(iter_files(sources))
    for path in tqdm(files, desc="reading headers", unit="file", disable=not progress, leave=False):
        out.files += 1
        try:
            ds = read_header(path, out.pixel_offsets)
        except InputError as exc:
            out.not_dicom += 1
            out.problems.append(Problem(str(path), str(exc).removeprefix(f"{path}: ")))
            continue
        meta = getattr(ds, "file_meta", None)
        sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
        modality = str(ds.get("Modality", "")).upper()
        if not sop_class and not modality:
            out.problems.append(Problem(str(path), f"neither {describe('SOPClassUID')} nor {describe('Modality')} "
                                        "is present; the file may be truncated or corrupt; skipped"))
            continue
        if sop_class == MEDIA_STORAGE_DIRECTORY:
            continue
        if sop_class == ENHANCED_CT_STORAGE:
            out.problems.append(Problem(str(path), "Enhanced CT (multi-frame) is not supported yet; "
                                        "export the series as CT Image Storage (one file per slice); skipped"))
            continue
        if sop_class == CT_IMAGE_STORAGE or (modality == "CT" and not sop_class):
            uid = str(ds.get("SeriesInstanceUID", ""))
            if not uid:
                out.problems.append(Problem(str(path), f"{describe('SeriesInstanceUID')} is missing; "
                                            "the slice cannot be grouped; skipped"))
                continue
            out.ct[uid].append((path, ds))
        elif sop_class == RT_DOSE_STORAGE or modality == "RTDOSE":
            out.dose.append((path, ds))
        elif sop_class == RT_STRUCT_STORAGE or modality == "RTSTRUCT":
            out.struct.append((path, ds))
        elif sop_class == RT_PLAN_STORAGE or modality == "RTPLAN":
            out.plans += 1
        else:
            out.other[modality or sop_class or "unknown"] += 1
    return out


# --------------------------------------------------------------------------------------------
# CT series


@dataclass
class CTSeries:
    """One CT series read from disk, native grid, position order."""

    patient_id: str
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    geometry: PlaneGeometry
    ipps: np.ndarray          # (n, 3) mm
    z_mm: np.ndarray          # (n,) mm along the normal
    hu: np.ndarray            # (n, rows, cols) float32 HU
    sop_uids: list[str]
    files: list[Path]
    slice_thickness: float
    warnings: list[Problem] = field(default_factory=list)


def _orientation(ds: pydicom.Dataset, path: Path) -> tuple[np.ndarray, np.ndarray]:
    iop = np.asarray(require(ds, "ImageOrientationPatient", path, why="the slice cannot be placed"),
                     dtype=np.float64)
    if iop.shape != (6,):
        raise InputError(f"{path}: {describe('ImageOrientationPatient')} value {list(iop)} must have 6 numbers")
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise InputError(f"{path}: {describe('ImageOrientationPatient')} value {list(iop)} is not two "
                         "orthogonal unit vectors")
    return row / np.linalg.norm(row), col / np.linalg.norm(col)


def _plane_key(ds: pydicom.Dataset, path: Path) -> tuple:
    row, col = _orientation(ds, path)
    spacing = tuple(float(v) for v in require(ds, "PixelSpacing", path))
    if len(spacing) != 2 or min(spacing) <= 0:
        raise InputError(f"{path}: {describe('PixelSpacing')} value {list(spacing)} must be two positive numbers")
    shape = (int(require(ds, "Rows", path)), int(require(ds, "Columns", path)))
    return (tuple(np.round(row / _ORIENT_TOL).astype(int)), tuple(np.round(col / _ORIENT_TOL).astype(int)),
            tuple(round(s, 3) for s in spacing), shape), row, col, spacing


_NATIVE_LITTLE_ENDIAN = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}  # implicit / explicit VR

UNCOMPRESSED_SYNTAXES = (
    "1.2.840.10008.1.2",        # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",      # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",   # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",      # Explicit VR Big Endian (retired)
)
"""The uncompressed transfer syntaxes, which pydicom reads by itself (pynetdicom's defaults, in its order)."""
COMPRESSED_SYNTAXES = (
    "1.2.840.10008.1.2.4.70",   # JPEG Lossless, first-order prediction (SV1)   pylibjpeg-libjpeg
    "1.2.840.10008.1.2.4.57",   # JPEG Lossless (process 14)                    pylibjpeg-libjpeg
    "1.2.840.10008.1.2.4.90",   # JPEG 2000 (lossless only)                     pylibjpeg-openjpeg
    "1.2.840.10008.1.2.4.80",   # JPEG-LS lossless                              pylibjpeg-libjpeg
    "1.2.840.10008.1.2.5",      # RLE Lossless                                  pydicom (pylibjpeg-rle)
    "1.2.840.10008.1.2.4.91",   # JPEG 2000 (lossy or lossless)                 pylibjpeg-openjpeg
    "1.2.840.10008.1.2.4.81",   # JPEG-LS near-lossless (lossy)                 pylibjpeg-libjpeg
    "1.2.840.10008.1.2.4.51",   # JPEG Extended, 12 bit (lossy)                 pylibjpeg-libjpeg, Pillow
    "1.2.840.10008.1.2.4.50",   # JPEG Baseline, 8 bit (lossy)                  pylibjpeg-libjpeg, Pillow
)
"""The compressed (encapsulated) transfer syntaxes whose pixel data medhash decodes, lossless first:
pydicom decodes them with the pylibjpeg packages among medhash's dependencies (RLE also by itself,
JPEG baseline/extended and JPEG 2000 also through Pillow). Received files are stored as they came."""

def transfer_syntax(ds: pydicom.Dataset) -> str:
    """The TransferSyntaxUID of ``ds``'s file meta ('' when it has none)."""
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""


RECEIVED_SOP_CLASSES = {CT_IMAGE_STORAGE: "CT", RT_DOSE_STORAGE: "RTDOSE", RT_STRUCT_STORAGE: "RTSTRUCT",
                        RT_PLAN_STORAGE: "RTPLAN"}
"""SOP Class UID -> short name of what `medhash listen` and `medhash pull` receive (plans are accepted so
that a planning system's export does not fail; the archive stores none)."""
RECEIVED_SYNTAXES = UNCOMPRESSED_SYNTAXES + COMPRESSED_SYNTAXES
"""The transfer syntaxes they accept, uncompressed first."""

LOSSY_SYNTAXES = {"1.2.840.10008.1.2.4.50": "JPEG Baseline", "1.2.840.10008.1.2.4.51": "JPEG Extended",
                  "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless"}
"""Transfer syntaxes that are always lossy (JPEG 2000 .4.91 may be either: its LossyImageCompression says)."""


def is_lossy(ds: pydicom.Dataset) -> bool:
    """True when the pixel data went through lossy compression: LossyImageCompression (0028,2110) is
    "01", or the transfer syntax is always lossy (:data:`LOSSY_SYNTAXES`)."""
    return str(ds.get("LossyImageCompression", "") or "").strip() == "01" or transfer_syntax(ds) in LOSSY_SYNTAXES


# what pydicom names for a missing decoder -> the package to install with pip
_PIP_NAMES = {"gdcm": "python-gdcm"}


def native_pixels(ds: pydicom.Dataset) -> np.ndarray | None:
    """The pixel data of an uncompressed little-endian grayscale data set, decoded as pydicom's
    ``pixel_array`` would (unused high bits cleared, signed values sign-extended); None when it is
    not such a data set (compressed, colour, big endian, odd sizes): then pydicom decodes it.

    (rows, cols) for one frame, (frames, rows, cols) for several; integer dtype of BitsAllocated.
    pydicom's decoder costs about 0.7 ms a CT slice for what is a reinterpretation of the bytes.
    """
    if transfer_syntax(ds) not in _NATIVE_LITTLE_ENDIAN or "PixelData" not in ds:
        return None
    try:
        alloc, stored, signed = int(ds.BitsAllocated), int(ds.BitsStored), int(ds.PixelRepresentation)
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    if samples != 1 or alloc not in (8, 16, 32) or not 1 <= stored <= alloc or signed not in (0, 1):
        return None
    data = ds.PixelData
    n = frames * rows * cols * alloc // 8
    if not isinstance(data, bytes) or len(data) not in (n, n + 1):  # + 1: the even-length pad byte
        return None
    arr = np.frombuffer(data, dtype=f"<{'i' if signed else 'u'}{alloc // 8}", count=frames * rows * cols)
    if stored < alloc:
        shift = alloc - stored
        arr = (arr << shift) >> shift if signed else arr & ((1 << stored) - 1)
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    return arr.reshape((frames, rows, cols) if frames > 1 else (rows, cols))


_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"UT", b"UC", b"UR", b"SQ", b"SV", b"UV"}
"""Explicit VRs whose element header has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2)."""


_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF


def _skip_sequence(raw, pos: int, implicit: bool, depth: int) -> int:
    """Position just after the delimiter of the undefined-length sequence whose items start at ``pos``
    (-1 when the encoding is not what PS3.5 7.5 describes, or the data ends first)."""
    n = len(raw)
    while pos + 8 <= n:
        tag_group, tag_elem, length = struct.unpack_from("<HHI", raw, pos)
        tag, pos = tag_group << 16 | tag_elem, pos + 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            return -1
        pos = walk_elements(raw, pos, implicit, stop=None, depth=depth + 1) if length == _UNDEFINED \
            else pos + length
        if pos < 0:
            return -1
    return -1


def walk_elements(raw, pos: int, implicit: bool, *, stop: int | None, capture=(),
                  found: dict[int, bytes] | None = None, depth: int = 0) -> int:
    """Walk the little-endian data elements of ``raw`` from ``pos`` without decoding them.

    At depth 0 (the data set itself) the walk stops before the first tag after ``stop`` (None: the end
    of ``raw``) and puts the raw values of the ``capture`` tags in ``found``; it returns where it
    stopped, which is ``len(raw)`` when the data ended exactly after an element.
    Deeper (inside an item of undefined length) it returns the position after the item's delimiter.
    Sequences and items of undefined length (encapsulated pixel data too) are skipped by their
    delimiters. -1 for anything unexpected, or data that ends inside an element.
    """
    n = len(raw)
    if depth > 8:
        return -1
    while pos + 8 <= n:
        tag_group, tag_elem, length = struct.unpack_from("<HHI", raw, pos)
        tag = tag_group << 16 | tag_elem
        if depth == 0 and stop is not None and tag > stop:
            return pos
        if tag == _ITEM_END:
            return pos + 8 if depth else -1
        vr = None
        if implicit:
            pos += 8
        else:
            vr = bytes(raw[pos + 4:pos + 6])
            if vr in _LONG_VRS:
                if pos + 12 > n:
                    return -1
                length, pos = struct.unpack_from("<I", raw, pos + 8)[0], pos + 12
            else:
                length, pos = length >> 16, pos + 8
        if length == _UNDEFINED:
            if vr not in (None, b"SQ", b"UN", b"OB", b"OW"):  # OB/OW: encapsulated pixel data
                return -1
            pos = _skip_sequence(raw, pos, implicit or vr == b"UN", depth)  # UN: an implicit VR sequence
            if pos < 0:
                return -1
            continue
        if pos + length > n:
            return -1
        if depth == 0 and found is not None and tag in capture:
            found[tag] = bytes(raw[pos:pos + length])
        pos += length
    return pos if depth == 0 and pos == n else -1


def attach_pixel_data(ds: pydicom.Dataset, path: Path, offset: int | None) -> bool:
    """Read the Pixel Data element of ``path`` at ``offset`` (where :func:`read_header` stopped) into
    the header ``ds``: the file's header is not parsed a second time.

    Only for uncompressed little-endian files; False (``ds`` unchanged) for anything else or anything
    unexpected (encapsulated or truncated data, another element there), and the caller reads the file
    with pydicom instead, whose messages then name the problem.
    """
    syntax = transfer_syntax(ds)
    if offset is None or syntax not in _NATIVE_LITTLE_ENDIAN:
        return False
    implicit = syntax == "1.2.840.10008.1.2"
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            head = fh.read(8)
            if len(head) < 8 or head[:4] != b"\xe0\x7f\x10\x00":
                return False
            if implicit:
                length, vr = int.from_bytes(head[4:8], "little"), "OW"
            elif head[4:6] in _LONG_VRS:
                more = fh.read(4)
                if len(more) < 4:
                    return False
                length, vr = int.from_bytes(more, "little"), head[4:6].decode("ascii")
            else:
                length, vr = int.from_bytes(head[6:8], "little"), head[4:6].decode("ascii", "replace")
            if length == 0xFFFFFFFF:  # encapsulated (compressed) frames
                return False
            value = fh.read(length)
    except OSError:
        return False
    if len(value) != length:
        return False
    ds.add_new(0x7FE00010, vr if vr in ("OB", "OW") else "OW", value)
    return True


def syntax_name(uid: str) -> str:
    """``JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80)``; the UID alone when unknown."""
    name = UID(uid).name
    return f"{name} ({uid})" if name and name != uid else str(uid)


def missing_decoder(uid: str) -> str | None:
    """Why pydicom cannot decode pixel data in transfer syntax ``uid`` here, or None when it can.

    Either pydicom has no decoder for the syntax at all (video, JPEG XL, private syntaxes), or its
    decoders need packages that are not installed: then the message names them as ``pip`` installs them.
    """
    from pydicom.pixels import get_decoder
    try:
        decoder = get_decoder(uid)
    except (NotImplementedError, ValueError):
        return (f"pydicom {pydicom.__version__} has no decoder for this transfer syntax; have the sender send "
                "the files uncompressed, or convert them to an uncompressed transfer syntax before ingest")
    if decoder.is_available:
        return None
    options = []
    for line in decoder.missing_dependencies:  # "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1"
        _, _, deps = line.partition(" - requires ")
        wanted = []
        for dep in re.split(r", | and ", deps):
            name = re.split(r"[<>=!~ ]", dep.strip(), maxsplit=1)[0]
            if name and name != "numpy":
                wanted.append(_PIP_NAMES.get(name, name) + dep.strip()[len(name):])
        if wanted:
            options.append(" with ".join(wanted))
    options.sort(key=lambda o: (not o.startswith("pylibjpeg"), o))  # what medhash depends on first
    if not options:
        return "no decoder for it is installed"
    return (f"no decoder for it is installed (pydicom decodes it with {'one of: ' if len(options) > 1 else ''}"
            f"{'; '.join(options)}; medhash depends on pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg and "
            "pylibjpeg-rle: `pip install -e .` installs them)")


def decoded_pixels(ds: pydicom.Dataset, path: Path, consequence: str) -> np.ndarray:
    """``ds.pixel_array`` (:func:`native_pixels` when it applies), or an InputError naming the file:
    for a transfer syntax that cannot be decoded here, the syntax and the package that would decode it;
    for data that cannot be decoded, that the file may be truncated or corrupt."""
    try:
        arr = native_pixels(ds)
        return arr if arr is not None else ds.pixel_array
    except Exception as exc:
        syntax = transfer_syntax(ds)
        reason = missing_decoder(syntax) if syntax else None
        if reason is not None:
            raise InputError(f"{path}: pixel data in transfer syntax {syntax_name(syntax)} cannot be decoded: "
                             f"{reason}; {consequence}") from None
        where = f" in transfer syntax {syntax_name(syntax)}" if syntax and syntax not in _NATIVE_LITTLE_ENDIAN else ""
        message = " ".join(str(exc).split())  # pydicom's plugin failures span several lines
        raise InputError(f"{path}: pixel data{where} cannot be decoded ({type(exc).__name__}: {message}); "
                         f"the file may be truncated or corrupt; {consequence}") from None


def pixel_hu(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    """HU of a CT slice: stored value x RescaleSlope + RescaleIntercept, (rows, cols) float32."""
    arr = decoded_pixels(ds, path, "slice skipped")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if arr.ndim != 2:
        raise InputError(f"{path}: expected one 2D frame, pixel data has shape {arr.shape}; skipped")
    hu = arr.astype(np.float32)  # a new array: scaled in place
    if slope != 1.0:
        hu *= np.float32(slope)
    if intercept != 0.0:
        hu += np.float32(intercept)
    return hu


def read_ct_series(series_uid: str, items: list[tuple[Path, pydicom.Dataset]]) -> CTSeries:
    """Read, check and order one CT series (pixel data included).

    Raises
    ------
    InputError
        When no slice of the series can be used. Problems with single slices are returned in
        ``warnings`` and those slices are left out.
    """
    warnings: list[Problem] = []
    groups: dict[tuple, list] = defaultdict(list)
    for path, ds in items:
        try:
            key, row, col, spacing = _plane_key(ds, path)
            ipp = np.asarray(require(ds, "ImagePositionPatient", path, why="the slice cannot be placed"),
                             dtype=np.float64)
            if ipp.shape != (3,):
                raise InputError(f"{path}: {describe('ImagePositionPatient')} value {list(ipp)} must have 3 numbers")
        except InputError as exc:
            warnings.append(Problem(str(path), str(exc).removeprefix(f"{path}: ") + "; slice skipped"))
            continue
        groups[key].append((path, ds, row, col, spacing, ipp))
    if not groups:
        if len(items) == 1 and warnings:  # one file (a query): its own reason says more
            w = warnings[0]
            raise InputError(f"{w.path}: {w.message.removesuffix('; slice skipped')}")
        raise InputError(f"CT series {series_uid}: no slice has a usable geometry")
    ordered = sorted(groups.values(), key=len, reverse=True)
    main = ordered[0]
    for other in ordered[1:]:
        p, _, r, c, s, _ = other[0]
        warnings.append(Problem(str(p), f"{len(other)} slice(s) of series {series_uid} have another "
                                f"orientation/spacing/size (orientation {list(np.r_[r, c].round(4))}, pixel "
                                f"spacing {list(s)}) than the other {len(main)}; left out (a localizer?)",
                                level="warning"))
    _, ds0, row, col, spacing, _ = main[0]
    geometry = PlaneGeometry(row_dir=row, col_dir=col, spacing=(float(spacing[0]), float(spacing[1])),
                             shape=(int(ds0.Rows), int(ds0.Columns)))
    normal = geometry.normal
    main.sort(key=lambda t: (float(t[5] @ normal), str(t[1].get("SOPInstanceUID", ""))))

    # duplicates: same SOP instance twice, or two slices at one position
    unique, seen_sop = [], set()
    for item in main:
        sop = str(item[1].get("SOPInstanceUID", ""))
        if sop and sop in seen_sop:
            continue
        seen_sop.add(sop)
        if unique and abs(float(item[5] @ normal) - float(unique[-1][5] @ normal)) < 1e-3:
            warnings.append(Problem(str(item[0]), f"a second slice at z = {float(item[5] @ normal):.2f} mm "
                                    f"(first: {unique[-1][0]}); left out", level="warning"))
            continue
        unique.append(item)

    hu, kept = [], []
    for item in unique:
        path = item[0]
        try:
            full = item[1] if "PixelData" in item[1] else pydicom.dcmread(path)
            img = pixel_hu(full, path)
            if "PixelData" in item[1]:
                del item[1].PixelData  # decoded: free the bytes
            if img.shape != geometry.shape:
                raise InputError(f"{path}: pixel data has shape {img.shape}, header says {geometry.shape}")
        except InputError as exc:
            warnings.append(Problem(str(path), str(exc).removeprefix(f"{path}: ")))
            continue
        except Exception as exc:
            warnings.append(Problem(str(path), f"cannot read ({type(exc).__name__}: {exc}); the file may be "
                                    "truncated or corrupt; slice skipped"))
            continue
        hu.append(img)
        kept.append(item)
    if not kept:
        if len(items) == 1 and warnings:  # one file (a query): its own reason says more
            w = warnings[0]
            raise InputError(f"{w.path}: {w.message.removesuffix('; slice skipped')}")
        raise InputError(f"CT series {series_uid}: none of its {len(items)} slice(s) could be read")

    lossy = [t[0] for t in kept if is_lossy(t[1])]
    if lossy:
        warnings.append(Problem(str(lossy[0]), f"{len(lossy)} of the {len(kept)} slices of series {series_uid} "
                                "went through lossy compression (LossyImageCompression 01 or a lossy JPEG "
                                "transfer syntax): their HU are not the scanner's (8-bit JPEG: errors of tens "
                                "of HU); ingested all the same", level="warning"))
    ipps = np.array([t[5] for t in kept])
    z = ipps @ normal
    warnings += spacing_warnings(z, [t[0] for t in kept], series_uid)
    first = kept[0][1]
    thickness = float(first.get("SliceThickness", 0) or 0) or (float(np.median(np.diff(z))) if len(z) > 1 else 0.0)
    patient_id = str(first.get("PatientID", "") or "").strip()
    study_uid = str(first.get("StudyInstanceUID", ""))
    if not patient_id:
        patient_id = "anonymous-" + (study_uid or series_uid)[-12:]
        warnings.append(Problem(str(kept[0][0]), f"{describe('PatientID')} is empty; patient stored as "
                                f"{patient_id!r}", level="warning"))
    return CTSeries(
        patient_id=patient_id, series_uid=series_uid, study_uid=study_uid,
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")), geometry=geometry, ipps=ipps,
        z_mm=z, hu=np.stack(hu), sop_uids=[str(t[1].get("SOPInstanceUID", "")) for t in kept],
        files=[t[0] for t in kept], slice_thickness=thickness, warnings=warnings)


def spacing_warnings(z: np.ndarray, files: list, series_uid: str) -> list[Problem]:
    """Warnings for gaps (a missing slice) and uneven spacing along z (sorted positions, mm)."""
    if len(z) < 3:
        return []
    dz = np.diff(z)
    step = float(np.median(dz))
    out = []
    gaps = np.flatnonzero(dz > 1.5 * step)
    for g in gaps:
        missing = int(round(dz[g] / step)) - 1
        out.append(Problem(str(files[g + 1]), f"series {series_uid}: {missing} slice(s) missing between "
                           f"z = {z[g]:.2f} mm and z = {z[g + 1]:.2f} mm (spacing {step:.2f} mm elsewhere); "
                           "ingested with the gap", level="warning"))
    regular = np.delete(dz, gaps)
    if len(regular) and (regular.max() - regular.min()) > max(0.01 * step, 0.01):
        k = int(np.argmax(np.abs(regular - step)))
        k = int(np.flatnonzero(dz == regular[k])[0])
        out.append(Problem(str(files[k + 1]), f"series {series_uid}: uneven slice spacing, "
                           f"{regular.min():.3f} to {regular.max():.3f} mm (e.g. {dz[k]:.3f} mm between "
                           f"z = {z[k]:.2f} and {z[k + 1]:.2f} mm); ingested as it is", level="warning"))
    return out


# --------------------------------------------------------------------------------------------
# RTDOSE


@dataclass
class DoseGrid:
    """An RTDOSE grid in patient coordinates.

    Attributes
    ----------
    gy : (frames, rows, cols) float32, Gy.
    origin : (3,) mm, centre of the first voxel of the first frame (ImagePositionPatient).
    geometry : in-plane geometry.
    offsets : (frames,) mm along the normal from ``origin``, increasing.
    """

    gy: np.ndarray
    origin: np.ndarray
    geometry: PlaneGeometry
    offsets: np.ndarray

    def sample(self, points: np.ndarray) -> np.ndarray:
        """Trilinear dose at patient points (..., 3) mm; 0 Gy outside the grid."""
        rel = points - self.origin
        c = rel @ self.geometry.row_dir / self.geometry.spacing[1]
        r = rel @ self.geometry.col_dir / self.geometry.spacing[0]
        return self._sample_index(r, c, rel @ self.geometry.normal)

    def sample_planes(self, origins_mm: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray,
                      size: int, spacing_mm: float) -> np.ndarray:
        """Trilinear dose on square grids of ``size`` x ``size`` pixels, one per plane.

        The same as :meth:`sample` at the pixel centres ``origin + j*spacing*row_dir +
        i*spacing*col_dir``, computed from the affine map (no (n, size, size, 3) array).

        Returns (n, size, size) float32 Gy.
        """
        g = self.geometry
        steps = np.arange(size, dtype=np.float64) * spacing_mm
        rel0 = np.asarray(origins_mm, dtype=np.float64) - self.origin           # (n, 3)
        axes = np.stack([g.col_dir, g.row_dir, g.normal])                         # r, c, w
        base = rel0 @ axes.T                                                      # (n, 3)
        d_j = axes @ np.asarray(row_dir, dtype=np.float64)                        # per column step
        d_i = axes @ np.asarray(col_dir, dtype=np.float64)                        # per row step
        fast = self._sample_planes_separable(base, d_i, d_j, steps)
        if fast is not None:
            return fast
        coord = (base[:, None, None, :] + steps[None, :, None, None] * d_i[None, None, None, :]
                 + steps[None, None, :, None] * d_j[None, None, None, :])        # (n, i, j, 3)
        r = coord[..., 0] / g.spacing[0]
        c = coord[..., 1] / g.spacing[1]
        return self._sample_index(r, c, coord[..., 2])

    def _sample_planes_separable(self, base: np.ndarray, d_i: np.ndarray, d_j: np.ndarray,
                                 steps: np.ndarray) -> np.ndarray | None:
        """:meth:`sample_planes` when the planes are parallel to the dose frames and their rows and
        columns run along the grid's axes (the usual case: axial CT, axial dose): each plane is then one
        blend of two frames, interpolated along one axis and then the other (two gathers of two rows
        or columns each), a few times faster than a trilinear lookup per pixel, with the same values.
        None otherwise.

        base : (n, 3) (r, c, w) mm of each plane's first pixel; d_i, d_j : (3,) mm per row / column step.
        """
        tol = 1e-9
        if abs(d_i[2]) > tol or abs(d_j[2]) > tol:
            return None
        if abs(d_i[1]) <= tol and abs(d_j[0]) <= tol:
            i_axis = 0                               # image rows run along dose rows
        elif abs(d_i[0]) <= tol and abs(d_j[1]) <= tol:
            i_axis = 1                               # transposed
        else:
            return None
        nf, nr, nc = self.gy.shape
        sizes, spacing = (nr, nc), self.geometry.spacing
        eps = 1e-3

        def taps(start: float, step: float, axis: int):
            """Lower and upper neighbour and their weights along one axis; weights 0 outside the grid
            (as :meth:`_sample_index`)."""
            n_axis = sizes[axis]
            x = (start + steps * step) / spacing[axis]
            ok = (x >= -eps) & (x <= n_axis - 1 + eps)
            xc = np.clip(x, 0, n_axis - 1)
            lo = np.minimum(np.floor(xc).astype(np.int64), max(n_axis - 2, 0))
            hi = np.minimum(lo + 1, n_axis - 1)
            frac = np.where(ok, xc - lo, 0.0)
            return lo, hi, np.where(ok, 1.0 - frac, 0.0), frac

        f, inside_f = self._frame_index(base[:, 2])
        out = np.zeros((len(base), len(steps), len(steps)), dtype=np.float32)
        for k in np.flatnonzero(inside_f):
            lo = min(int(np.floor(f[k])), max(nf - 2, 0))
            a = f[k] - lo
            frame = self.gy[lo].astype(np.float64) * (1.0 - a)
            if a > 0:
                frame += self.gy[min(lo + 1, nf - 1)].astype(np.float64) * a
            r_lo, r_hi, r_wlo, r_whi = taps(base[k, 0], (d_i if i_axis == 0 else d_j)[0], 0)
            c_lo, c_hi, c_wlo, c_whi = taps(base[k, 1], (d_j if i_axis == 0 else d_i)[1], 1)
            rows = frame[r_lo] * r_wlo[:, None] + frame[r_hi] * r_whi[:, None]          # (image axis, nc)
            plane = rows[:, c_lo] * c_wlo[None, :] + rows[:, c_hi] * c_whi[None, :]      # (along r, along c)
            out[k] = plane if i_axis == 0 else plane.T
        return out

    def _frame_index(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional frame index of offsets ``w`` (mm along the normal), and whether each lies within
        the frames (1e-2 mm of tolerance)."""
        if len(self.offsets) == 1:
            return np.zeros_like(w), np.abs(w - self.offsets[0]) <= 1e-2
        f = np.interp(w, self.offsets, np.arange(len(self.offsets), dtype=np.float64))
        return f, (w >= self.offsets[0] - 1e-2) & (w <= self.offsets[-1] + 1e-2)

    def _sample_index(self, r: np.ndarray, c: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Trilinear dose at fractional (row, column) indices and offsets w (mm) along the normal."""
        nf, nr, nc = self.gy.shape
        eps = 1e-3
        f, inside_f = self._frame_index(w)
        inside = inside_f & (r >= -eps) & (r <= nr - 1 + eps) & (c >= -eps) & (c <= nc - 1 + eps)
        out = np.zeros(r.shape, dtype=np.float32)
        if inside.any():
            coords = np.stack([f[inside], np.clip(r[inside], 0, nr - 1), np.clip(c[inside], 0, nc - 1)])
            out[inside] = ndimage.map_coordinates(self.gy, coords, order=1, mode="nearest")
        return out


def read_dose(path: Path) -> DoseGrid:
    """Read an RTDOSE file into a :class:`DoseGrid` (Gy, patient mm).

    Raises InputError naming the element when the grid cannot be placed or is not in Gy.
    """
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise InputError(f"{path}: cannot read RTDOSE ({type(exc).__name__}: {exc})") from None
    units = str(ds.get("DoseUnits", "GY")).upper()
    if units != "GY":
        raise InputError(f"{path}: {describe('DoseUnits')} is {units!r}; only GY can be converted to Gy; "
                         "dose not used")
    scaling = float(require(ds, "DoseGridScaling", path, why="stored values cannot be converted to Gy"))
    row, col = _orientation(ds, path)
    spacing = tuple(float(v) for v in require(ds, "PixelSpacing", path))
    origin = np.asarray(require(ds, "ImagePositionPatient", path), dtype=np.float64)
    arr = decoded_pixels(ds, path, "dose not used")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    arr = arr.reshape(frames, int(ds.Rows), int(ds.Columns))
    geometry = PlaneGeometry(row_dir=row, col_dir=col, spacing=(spacing[0], spacing[1]), shape=arr.shape[1:])
    if frames > 1 or "GridFrameOffsetVector" in ds:
        gfov = np.asarray(require(ds, "GridFrameOffsetVector", path, why="frames cannot be placed"),
                          dtype=np.float64).ravel()
        if len(gfov) != frames:
            raise InputError(f"{path}: {describe('GridFrameOffsetVector')} has {len(gfov)} values for "
                             f"{frames} frames")
        if gfov[0] != 0.0:
            # absolute form: z coordinates of the frames (only defined for axial grids)
            gfov = gfov - float(origin @ geometry.normal)
    else:
        gfov = np.zeros(1)
    gy = arr.astype(np.float32) * np.float32(scaling)
    order = np.argsort(gfov, kind="stable")
    return DoseGrid(gy=np.ascontiguousarray(gy[order]), origin=origin, geometry=geometry, offsets=gfov[order])


def choose_dose(candidates: list[tuple[Path, pydicom.Dataset]]) -> tuple[Path, pydicom.Dataset]:
    """Prefer DoseSummationType PLAN, then the largest grid, then the SOPInstanceUID (determinism)."""
    def key(item):
        _, ds = item
        size = int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("Rows", 0)) * int(ds.get("Columns", 0))
        return (str(ds.get("DoseSummationType", "")).upper() != "PLAN", -size, str(ds.get("SOPInstanceUID", "")))
    return sorted(candidates, key=key)[0]


# --------------------------------------------------------------------------------------------
# putting it together


def series_to_volume(ct: CTSeries, dose: tuple[Path, DoseGrid, pydicom.Dataset] | None,
                     struct: tuple[Path, pydicom.Dataset] | None) -> Volume:
    """Resample a CT series (and its dose and structures) onto the model grid."""
    placement = place_grid(ct.hu, ct.geometry, ct.ipps)
    ct_grid = stack_to_grid(ct.hu, ct.geometry.spacing, placement.start, kind="ct")
    info: dict = {"study_uid": ct.study_uid, "frame_of_reference_uid": ct.frame_of_reference_uid,
                  "slice_thickness_mm": ct.slice_thickness}
    warnings = list(ct.warnings)
    dose_grid = None
    if dose is not None:
        path, grid, dds = dose
        dose_grid = grid.sample_planes(placement.origins_mm, ct.geometry.row_dir, ct.geometry.col_dir,
                                       GRID_SIZE, GRID_SPACING_MM)
        info["dose"] = {"sop_instance_uid": str(dds.get("SOPInstanceUID", "")),
                        "summation_type": str(dds.get("DoseSummationType", "")),
                        "max_gy": float(grid.gy.max())}
    masks: dict[str, np.ndarray] = {}
    if struct is not None:
        spath, sds = struct
        masks, swarn = rasterise_structure_set(sds, ct.z_mm, placement.origins_mm, ct.geometry.row_dir,
                                               ct.geometry.col_dir, source=str(spath))
        warnings += swarn
        info["structure_set"] = {"sop_instance_uid": str(sds.get("SOPInstanceUID", "")),
                                 "label": "", "rois": sorted(masks)}
    dz = float(np.median(np.diff(ct.z_mm))) if len(ct.z_mm) > 1 else ct.slice_thickness
    return Volume(
        patient_id=ct.patient_id, series_uid=ct.series_uid, source="dicom",
        slice_index=np.arange(len(ct.z_mm), dtype=np.int64), z_mm=ct.z_mm, origins_mm=placement.origins_mm,
        row_dir=ct.geometry.row_dir, col_dir=ct.geometry.col_dir,
        native_spacing=(ct.geometry.spacing[0], ct.geometry.spacing[1], dz),
        ct=ct_grid, dose=dose_grid, masks=masks, info=info, warnings=warnings)


def read_dicom(sources: Iterable[str | Path], progress: bool = False,
               known_series: set[str] | None = None, workers: int | None = None) -> Iterator[Volume | Problem]:
    """Read every CT series under ``sources`` with its dose and structures.

    Yields a :class:`Volume` per usable CT series (slices without body not yet removed) and a
    :class:`Problem` for everything that could not be used or deserves a warning. Series whose
    SeriesInstanceUID is in ``known_series`` are not read again (idempotent re-ingest). Series are
    read in ``workers`` processes (default: one per core, at most 4), yielded in a fixed order.
    """
    from tqdm import tqdm

    found = scan(sources, progress=progress)
    yield from found.problems
    if found.other:
        kinds = ", ".join(f"{k} x{v}" for k, v in sorted(found.other.items()))
        yield Problem("(sources)", f"ignored DICOM objects of other kinds: {kinds}", level="warning")

    for_of_ct = {}
    for uid, items in found.ct.items():
        for_of_ct[uid] = str(items[0][1].get("FrameOfReferenceUID", ""))
    ct_fors = set(for_of_ct.values())

    doses: dict[str, list] = defaultdict(list)
    for path, ds in found.dose:
        fuid = str(ds.get("FrameOfReferenceUID", ""))
        if not fuid or fuid not in ct_fors:
            yield Problem(str(path), f"RTDOSE with {describe('FrameOfReferenceUID')} {fuid or '(missing)'} "
                          "matches no CT series in this run; not ingested (ingest it together with its CT "
                          "series)")
            continue
        doses[fuid].append((path, ds))
    structs: dict[str, list] = defaultdict(list)
    for path, ds in found.struct:
        fuids = {str(r.get("FrameOfReferenceUID", "")) for r in ds.get("ReferencedFrameOfReferenceSequence", [])}
        fuids |= {str(r.get("ReferencedFrameOfReferenceUID", "")) for r in ds.get("StructureSetROISequence", [])}
        match = sorted(fuids & ct_fors)
        if not match:
            yield Problem(str(path), "RTSTRUCT references no CT series of this run (by "
                          f"{describe('FrameOfReferenceUID')}); not ingested")
            continue
        structs[match[0]].append((path, ds))

    jobs = []
    warned_dose: set[str] = set()  # one warning per frame of reference, not per CT series
    for uid in sorted(found.ct):
        if known_series and uid in known_series:
            yield Problem(str(found.ct[uid][0][0]), f"series {uid} is already in the archive; not read again",
                          level="info")
            continue
        fuid = for_of_ct[uid]
        dose_path = struct_path = None
        if fuid in doses:
            dose_path, dds = choose_dose(doses[fuid])
            others = [p for p, _ in doses[fuid] if p != dose_path]
            if others and fuid not in warned_dose:
                warned_dose.add(fuid)
                yield Problem(str(dose_path), f"{len(doses[fuid])} RTDOSE for frame of reference {fuid}: used "
                              f"this one (DoseSummationType {dds.get('DoseSummationType', '?')}); ignored "
                              + ", ".join(map(str, others)), level="warning")
        if fuid in structs:
            cands = sorted(structs[fuid], key=lambda t: (str(t[1].get("StructureSetDate", "")),
                                                         str(t[1].get("StructureSetTime", "")),
                                                         str(t[1].get("SOPInstanceUID", ""))), reverse=True)
            struct_path = cands[0][0]
            if len(cands) > 1:
                yield Problem(str(struct_path), f"{len(cands)} RTSTRUCT for frame of reference {fuid}: used the "
                              "newest (this one)", level="warning")
        jobs.append((uid, [p for p, _ in found.ct[uid]], dose_path, struct_path))

    bar = tqdm(total=len(jobs), desc="CT series", unit="series", disable=not progress, leave=False)
    if workers is None:
        workers = min(len(jobs), os.cpu_count() or 1, 4)
    if workers <= 1 or len(jobs) <= 1:
        # in this process: the headers read by the scan are used again, only the pixel data is read
        results = (read_series_job(job, found) for job in jobs)
        pool = None
    else:
        # forked workers inherit the scan (module global set before they start): they reuse its headers too
        global _FORKED_SCAN
        _FORKED_SCAN = found
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
        results = pool.map(_read_series_job_forked, jobs)
    seen: set[Problem] = set()
    try:
        for items in results:
            bar.update(1)
            for item in items:  # series sharing a frame of reference meet the same dose problem
                if isinstance(item, Problem):
                    if item in seen:
                        continue
                    seen.add(item)
                yield item
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
            _FORKED_SCAN = None


_FORKED_SCAN: DicomScan | None = None
"""The scan of the read_dicom call whose forked workers are running (None otherwise)."""


def _read_series_job_forked(job) -> list[Volume | Problem]:
    """:func:`read_series_job` in a forked worker, with the scan it inherited from its parent."""
    return read_series_job(job, _FORKED_SCAN)


def read_series_job(job: tuple[str, list[Path], Path | None, Path | None],
                    scanned: DicomScan | None = None) -> list[Volume | Problem]:
    """Read one CT series with its RTDOSE and RTSTRUCT onto the model grid (runs in a worker).

    Parameters
    ----------
    job : (SeriesInstanceUID, CT files, RTDOSE file or None, RTSTRUCT file or None)
    scanned : the scan that found the files, when the job runs in the process that scanned or in a
        worker forked from it: its headers are used again (the CT slices' pixel data read at the offsets it recorded, the
        RTSTRUCT and the RTDOSE header as read) instead of parsing every file a second time.

    Returns
    -------
    The problems met, then the Volume (if the series could be read).
    """
    uid, paths, dose_path, struct_path = job
    out: list[Volume | Problem] = []
    items = []
    headers = dict(scanned.ct.get(uid, [])) if scanned is not None else {}
    for path in paths:
        ds = headers.get(path)
        if ds is not None and attach_pixel_data(ds, path, scanned.pixel_offsets.get(path)):
            items.append((path, ds))
            continue
        try:
            items.append((path, pydicom.dcmread(path)))
        except Exception as exc:
            out.append(Problem(str(path), f"cannot read ({type(exc).__name__}: {exc}); the file may be "
                               "truncated or corrupt; slice skipped"))
    try:
        ct = read_ct_series(uid, items)
    except InputError as exc:
        out.append(Problem(str(paths[0].parent), str(exc)))
        return out
    dose = struct = None
    if dose_path is not None:
        try:
            header = next((d for p, d in scanned.dose if p == dose_path), None) if scanned is not None else None
            dose = (dose_path, read_dose(dose_path),
                    header if header is not None else pydicom.dcmread(dose_path, stop_before_pixels=True))
        except InputError as exc:
            out.append(Problem(str(dose_path), str(exc).removeprefix(f"{dose_path}: ")))
    if struct_path is not None:
        try:
            known = next((d for p, d in scanned.struct if p == struct_path), None) if scanned is not None else None
            struct = (struct_path, known if known is not None else pydicom.dcmread(struct_path, force=True))
        except Exception as exc:
            out.append(Problem(str(struct_path), f"cannot read RTSTRUCT ({type(exc).__name__}: {exc}); "
                               "structures not ingested"))
    try:
        out.append(series_to_volume(ct, dose, struct))
    except InputError as exc:
        out.append(Problem(str(ct.files[0].parent), str(exc)))
    return out


def read_query(path: str | Path, *, slice_index: int | None = None, dose_path: str | Path | None = None
               ) -> tuple[Volume, int]:
    """A query slice from DICOM, on the model grid exactly as ``ingest`` would put it.

    Parameters
    ----------
    path : a CT slice file, or a folder holding one CT series (then ``slice_index`` picks the slice:
        0-based, in position order).
    dose_path : optional RTDOSE of the same frame of reference, resampled onto the slice.

    Returns
    -------
    (volume, k) : the series on the model grid and the position of the query slice in it.
    """
    path = Path(path)
    if path.is_dir():
        found = scan([path])
        if not found.ct:
            raise InputError(f"{path}: no CT series in this folder" +
                             (f" ({found.problems[0].message})" if found.problems else ""))
        if len(found.ct) > 1:
            raise InputError(f"{path}: {len(found.ct)} CT series in this folder; give a folder with one series")
        uid, items = next(iter(found.ct.items()))
        if slice_index is None:
            raise InputError(f"{path} is a series folder: say which slice with --slice N (0 to {len(items) - 1})")
    else:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        ds = read_header(path)
        sop_class = str(ds.get("SOPClassUID", ""))
        modality = str(ds.get("Modality", "")).upper()
        if sop_class != CT_IMAGE_STORAGE and modality != "CT":
            raise InputError(f"{path}: a query must be a CT image; this file is {modality or sop_class or 'of no known type'}"
                             + ("" if modality or sop_class else " (no Modality, no SOP Class UID: truncated or corrupt?)"))
        uid, items = str(ds.get("SeriesInstanceUID", "") or "query"), [(path, ds)]
        if slice_index not in (None, 0):
            raise InputError(f"{path} is a single slice: --slice must be 0 or left out")
    full = []
    for p, _ in items:
        try:
            full.append((p, pydicom.dcmread(p)))
        except Exception as exc:
            raise InputError(f"{p}: cannot read ({type(exc).__name__}: {exc})") from None
    ct = read_ct_series(uid, full)
    k = 0 if slice_index is None else int(slice_index)
    if not 0 <= k < len(ct.z_mm):
        raise InputError(f"{path}: --slice {k} is outside the series (0 to {len(ct.z_mm) - 1})")
    dose = None
    if dose_path is not None:
        dose_path = Path(dose_path)
        hdr = read_header(dose_path)
        if str(hdr.get("Modality", "")).upper() != "RTDOSE":
            raise InputError(f"{dose_path}: --dose must be an RTDOSE file; this file is {hdr.get('Modality', '?')}")
        if ct.frame_of_reference_uid and str(hdr.get("FrameOfReferenceUID", "")) != ct.frame_of_reference_uid:
            raise InputError(f"{dose_path}: {describe('FrameOfReferenceUID')} differs from the CT's "
                             f"({ct.frame_of_reference_uid}); the dose belongs to another scan")
        dose = (dose_path, read_dose(dose_path), hdr)
    return series_to_volume(ct, dose, None), k
