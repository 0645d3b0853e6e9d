"""DICOM encoding: SOP classes, transfer syntaxes, the element walker and the pixel decoders.

Everything here works on one data set or its raw bytes and knows nothing of CT series, dose grids or
structure sets: :func:`walk_elements` (the little-endian element walk, used by the listener too),
the transfer-syntax lists (:data:`UNCOMPRESSED_SYNTAXES`, :data:`COMPRESSED_SYNTAXES`,
:data:`RECEIVED_SYNTAXES`), :func:`native_pixels` (uncompressed pixel data without pydicom's decoder),
:func:`attach_pixel_data` (the Pixel Data element read at the offset where a header stopped),
:func:`decoded_pixels` (every other transfer syntax, with messages naming the missing decoder), and
:func:`describe` / :func:`require` (messages naming an element by tag and keyword).
"""
from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import dictionary_description, tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from ...errors import InputError

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


def describe(keyword: str) -> str:
    """``(gggg,eeee) 'Name'`` for a DICOM keyword, as pydicom writes it in its messages."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return repr(keyword)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) '{dictionary_description(tag)}'"


def require(ds: pydicom.Dataset, keyword: str, path: str | Path, *, why: str = "") -> object:
    """The value of ``keyword`` in ``ds``, or an :class:`InputError` naming file and element (missing,
    or not convertible by pydicom)."""
    value = value_of(ds, keyword, path)
    if value is None:
        extra = f": {why}" if why else ""
        raise InputError(f"{path}: {describe(keyword)} is missing{extra}")
    return value


def value_of(ds: pydicom.Dataset, keyword: str, path: str | Path, default: object = None) -> object:
    """The value of ``keyword`` in ``ds`` (``default`` when absent or empty), or an :class:`InputError`
    naming file and element when pydicom cannot convert it (a wrong VR, an unknown VR, bad bytes)."""
    try:
        value = ds.get(keyword, None)
    except Exception as exc:  # pydicom raises many types on damaged values
        raise InputError(f"{path}: {describe(keyword)} cannot be read ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})") from None
    empty = value is None or (isinstance(value, (str, bytes, list, MultiValue)) and len(value) == 0)
    return default if empty else value


def numbers(ds: pydicom.Dataset, keyword: str, path: str | Path, *, count: int | None = None,
            lo: float = -np.inf, hi: float = np.inf, unit: str = "", default: object = None,
            why: str = "") -> np.ndarray:
    """The values of ``keyword`` as a float64 array, each finite and in [``lo``, ``hi``], or an
    :class:`InputError` naming file, element and value.

    Parameters
    ----------
    count : the number of values the element must hold (None: any number, at least one).
    default : used when the element is absent or empty; None: it is required (``why`` says why).
    """
    value = value_of(ds, keyword, path)
    if value is None:
        if default is None:
            raise InputError(f"{path}: {describe(keyword)} is missing" + (f": {why}" if why else ""))
        value = default
    items = list(value) if isinstance(value, (list, tuple, MultiValue, np.ndarray)) else [value]
    try:
        arr = np.array([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{path}: {describe(keyword)} value {_short(value)} is not a list of numbers "
                         f"({' '.join(str(exc).split())[:120]})") from None
    if (count is not None and arr.size != count) or arr.size == 0:
        raise InputError(f"{path}: {describe(keyword)} value {_short(value)} must have "
                         f"{count if count is not None else 'at least one'} number(s)")
    bad = ~np.isfinite(arr) | (arr < lo) | (arr > hi)
    if bad.any():
        unit_s = f" {unit}" if unit else ""
        raise InputError(f"{path}: {describe(keyword)} value {_short(value)} is out of range: each must be "
                         f"finite and within [{lo:g}, {hi:g}]{unit_s}")
    return arr


def number(ds: pydicom.Dataset, keyword: str, path: str | Path, **kw) -> float:
    """One value of ``keyword``, finite and in range: :func:`numbers` with ``count=1``."""
    return float(numbers(ds, keyword, path, count=1, **kw)[0])


def _short(value: object) -> str:
    text = repr(list(value) if isinstance(value, MultiValue) else value)
    return text if len(text) <= 80 else text[:77] + "..."


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


def truncation(path: str | Path, ds: pydicom.Dataset) -> str | None:
    """Why the data set of ``path`` is incomplete (it ends inside a data element: a truncated file,
    which pydicom reads silently as a shorter data set), or None when it ends on an element boundary.

    Checked for little-endian files with a ``DICM`` preamble only (the others: None).
    """
    syntax = transfer_syntax(ds)
    raw = Path(path).read_bytes()
    if syntax not in _NATIVE_LITTLE_ENDIAN or raw[128:132] != b"DICM":
        return None
    meta_end = walk_elements(raw, 132, False, stop=0x0002FFFF)
    end = walk_elements(raw, meta_end, syntax == "1.2.840.10008.1.2", stop=None) if meta_end >= 0 else -1
    if end != len(raw):
        return f"the data set ends inside a data element (the file has {len(raw)} bytes): the file is truncated or corrupt"
    return None


def syntax_name(uid: str) -> str:
    """``JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80)``; the UID alone when unknown."""
    name = UID(uid).name
    return f"{name} ({uid})" if name and name != uid else str(uid)


def missing_decoder(uid: str) -> str | None:
    """Why pydicom cannot decode pixel data in transfer syntax ``uid`` here, or None when it can.

    Either pydicom has no decoder for the syntax at all (video, JPEG XL, private syntaxes), or its
    decoders need packages that are not installed: then the message names them as ``pip`` installs them.
    """
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


