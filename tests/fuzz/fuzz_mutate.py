"""Seeded single-file corruptions of DICOM RT files (CT slices, RTDOSE, RTSTRUCT) for the ingest fuzz harness.

Test helper (not a test file), imported by ``tests/fuzz/test_fuzz.py`` and ``benchmarks/fuzz.py``.

:func:`mutate` damages one file of a patient folder written by the demo writers (``CT_*.dcm``,
``RD_<id>.dcm``, ``RS_<id>.dcm``), or adds one file next to them (the duplicate kinds), and says what it
did. Every choice comes from the ``numpy.random.Generator`` it is given, so a case is reproduced by its
seed. The kinds (:data:`KINDS`) are those of issue 17:

=====================  ==============  =====================================================================
kind                   targets         what
=====================  ==============  =====================================================================
byte_flip              ct, rtdose,     1-8 random bytes after the preamble XORed with a random non-zero byte
                       rtstruct
truncate               ct, rtdose,     the file cut at a random point (5-95 % of its length)
                       rtstruct
delete_tag             ct, rtdose,     one attribute the reader needs deleted (top level or in a sequence
                       rtstruct        item)
nan_inf                ct, rtdose,     one value of a numeric attribute (position, orientation, spacing,
                       rtstruct        rescale, DoseGridScaling, frame offsets, ContourData) set to nan/inf
absurd_value           ct, rtdose      values no real file holds: a slope of 0 or 1e30, a negative spacing,
                                       a position of 1e30 mm, a non-unit orientation, 65535 rows, ...
huge_length            ct, rtdose,     the length field of one element set to a huge value (0xFFF0 for a
                       rtstruct        2-byte length, 0x7FFFFFF0 or 0xFFFFFFF0 for a 4-byte one)
wrong_vr               ct, rtdose,     an element re-declared with another VR, its bytes kept (PixelSpacing
                       rtstruct        as UL, DoseGridScaling as US, RescaleSlope as AT, VR 'XX', ...)
transfer_syntax        ct, rtdose,     the file meta declares another transfer syntax (big endian, implicit,
                       rtstruct        deflated, JPEG, RLE, unknown) while the data set is unchanged
dup_identical          ct              a byte-identical copy of a slice under another name
dup_different          ct              a copy with the same SOPInstanceUID but other pixels or position
dup_truncated          ct              a truncated copy with the same SOPInstanceUID next to its twin
missing_for            ct, rtdose,     FrameOfReferenceUID (or the RTSTRUCT's references to it) deleted
                       rtstruct
missing_dose_scaling   rtdose          DoseGridScaling deleted
contour_data           rtstruct        one ContourData damaged: '2£.81', nan, inf, 1e30, a value
                                       dropped (count not a multiple of 3), empty
missing_roi_number     rtstruct        ROINumber or ReferencedROINumber deleted from one item
=====================  ==============  =====================================================================
"""
from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import Tag

TARGETS = ("ct", "rtdose", "rtstruct")


@dataclass(frozen=True)
class Kind:
    """A kind of corruption: the file types it applies to, and the rule its outcome must follow:

    * ``"report"``: any change it causes in the archive must be reported (a problem naming the file
      or its folder);
    * ``"name"``: a problem must name the file itself (duplicates that differ from their twin: the
      other one reported by name), whatever is stored;
    * ``"same"``: nothing may change (an identical duplicate is dropped silently);
    * ``"none"``: no rule beyond the common ones (the damage may be undetectable: a flipped pixel).
    """

    name: str
    targets: tuple[str, ...]
    rule: str = "report"


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("byte_flip", TARGETS, rule="none"),
    Kind("truncate", TARGETS),
    Kind("delete_tag", TARGETS),
    Kind("nan_inf", TARGETS),
    Kind("absurd_value", ("ct", "rtdose")),
    Kind("huge_length", TARGETS),
    Kind("wrong_vr", TARGETS),
    Kind("transfer_syntax", TARGETS),
    Kind("dup_identical", ("ct",), rule="same"),
    Kind("dup_different", ("ct",), rule="name"),
    Kind("dup_truncated", ("ct",), rule="name"),
    Kind("missing_for", TARGETS),
    Kind("missing_dose_scaling", ("rtdose",)),
    Kind("contour_data", ("rtstruct",)),
    Kind("missing_roi_number", ("rtstruct",)),
)}


@dataclass(frozen=True)
class Mutation:
    """What :func:`mutate` did: the kind, the file type, the damaged (or added) file and a description."""

    kind: str
    target: str
    path: Path
    detail: str
    twin: Path | None = None
    """The duplicate kinds: the original file the added one copies."""


# ------------------------------------------------------------------------------------------- helpers
def target_files(folder: Path, target: str) -> list[Path]:
    """The files of one type in a demo patient folder, sorted."""
    pattern = {"ct": "CT_*.dcm", "rtdose": "RD_*.dcm", "rtstruct": "RS_*.dcm"}[target]
    return sorted(folder.glob(pattern))


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    """An element written as these bytes under this VR, whatever they mean (padded to even length)."""
    if len(value) % 2:
        value += b" "
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def _put_raw(ds: pydicom.Dataset, tag: int, vr: str, value: bytes) -> None:
    ds._dict[Tag(tag)] = _raw(tag, vr, value)  # noqa: SLF001  (a raw element bypasses every check)


def _raw_bytes(ds: pydicom.Dataset, keyword: str) -> bytes:
    """The value bytes of an element as they are in the file (re-encoded if it was already decoded)."""
    elem = ds.get_item(keyword)
    if isinstance(elem, RawDataElement) or getattr(elem, "is_raw", False):
        return bytes(elem.value or b"")
    value = elem.value
    if isinstance(value, bytes):
        return value
    if elem.VM > 1:
        return "\\".join(str(v) for v in value).encode("latin-1")
    return str(value).encode("latin-1")


def _items(ds: pydicom.Dataset, path: tuple[str, ...]) -> list[pydicom.Dataset]:
    """Every data set reached through the sequence keywords of ``path`` (``("ROIContourSequence",
    "ContourSequence")``: every contour item)."""
    level = [ds]
    for kw in path:
        level = [item for d in level for item in d.get(kw, [])]
    return level


def _save(ds: pydicom.Dataset, path: Path) -> None:
    ds.save_as(path)


# ------------------------------------------------------------------------------------------ the kinds
def _byte_flip(path: Path, target: str, rng) -> str:
    data = bytearray(path.read_bytes())
    n = int(rng.integers(1, 9))
    where = sorted(int(x) for x in rng.integers(132, len(data), size=n))
    for i in where:
        data[i] ^= int(rng.integers(1, 256))
    path.write_bytes(bytes(data))
    return f"{n} byte(s) flipped at {where}"


def _truncate(path: Path, target: str, rng) -> str:
    data = path.read_bytes()
    keep = int(len(data) * rng.uniform(0.05, 0.95))
    path.write_bytes(data[:keep])
    return f"cut at byte {keep} of {len(data)}"


_DELETABLE = {
    "ct": ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "BitsAllocated",
           "BitsStored", "PixelRepresentation", "RescaleSlope", "RescaleIntercept", "SOPInstanceUID",
           "SeriesInstanceUID", "StudyInstanceUID", "PatientID", "Modality", "SOPClassUID", "PixelData",
           "SliceThickness", "SamplesPerPixel", "PhotometricInterpretation"],
    "rtdose": ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "GridFrameOffsetVector",
               "NumberOfFrames", "Rows", "Columns", "BitsAllocated", "PixelRepresentation", "PixelData",
               "DoseUnits", "DoseSummationType", "DoseType", "SOPInstanceUID", "SeriesInstanceUID", "PatientID"],
    "rtstruct": ["StructureSetROISequence", "ROIContourSequence", "ReferencedFrameOfReferenceSequence",
                 "RTROIObservationsSequence", "SOPInstanceUID", "PatientID",
                 "ROIContourSequence/ContourSequence/ContourData", "StructureSetROISequence/ROIName",
                 "ROIContourSequence/ContourSequence/ContourGeometricType",
                 "ROIContourSequence/ContourSequence", "ROIContourSequence/ContourSequence/NumberOfContourPoints"],
}


def _delete_tag(path: Path, target: str, rng) -> str:
    ds = pydicom.dcmread(path)
    what = _pick(rng, _DELETABLE[target])
    *seqs, kw = what.split("/")
    items = [it for it in _items(ds, tuple(seqs)) if kw in it]
    if not items:
        return f"{what}: not present, nothing deleted"
    item = _pick(rng, items)
    del item[kw]
    _save(ds, path)
    return f"{what} deleted" + (f" (item {items.index(item)})" if seqs else "")


_NUMERIC = {   # keyword -> VR, values per file type whose value can be made absurd
    "ct": {"ImagePositionPatient": "DS", "ImageOrientationPatient": "DS", "PixelSpacing": "DS",
           "RescaleSlope": "DS", "RescaleIntercept": "DS", "SliceThickness": "DS"},
    "rtdose": {"ImagePositionPatient": "DS", "ImageOrientationPatient": "DS", "PixelSpacing": "DS",
               "GridFrameOffsetVector": "DS", "DoseGridScaling": "DS"},
}
# keyword -> values that no real file holds (a position of -1 mm or a flipped orientation is valid
# DICOM, so those are not drawn: the harness could not expect them to be reported)
_ABSURD = {"ImagePositionPatient": ("1e30", "-1e30", "123456789", "-98765432"),
           "ImageOrientationPatient": ("5", "-2.5", "1e30", "0*"),   # 0*: every value 0 (no direction)
           "PixelSpacing": ("0", "-1", "-2.5", "1e30", "1e-30", "123456789"),
           "RescaleSlope": ("0", "-1", "-2.5", "1e30", "1e-30", "123456789"),
           "RescaleIntercept": ("1e30", "-1e30", "123456789", "-98765432"),
           "SliceThickness": ("0", "-1", "1e30", "1e-30"),
           "GridFrameOffsetVector": ("1e30", "-1e30", "123456789", "-1*"),   # -1*: every offset -1
           "DoseGridScaling": ("0", "-1", "-2.5", "1e30", "1e-30", "123456789")}
_ABSURD_US = {"ct": ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel"),
              "rtdose": ("Rows", "Columns", "BitsAllocated", "NumberOfFrames")}


def _set_one_value(ds: pydicom.Dataset, kw: str, text: str, rng) -> str:
    """Replace one (or all, at random or when ``text`` ends with ``*``) of the backslash-separated
    values of a DS/IS element."""
    values = _raw_bytes(ds, kw).decode("latin-1").strip(" \0").split("\\")
    every, text = text.endswith("*"), text.rstrip("*")
    if every or rng.random() < 0.3:
        values = [text] * len(values)
        which = "every value"
    else:
        i = int(rng.integers(len(values)))
        values[i] = text
        which = f"value {i}"
    _put_raw(ds, Tag(kw), ds.get_item(kw).VR or "DS", "\\".join(values).encode("latin-1"))
    return f"{kw} {which} = {text}"


def _nan_inf(path: Path, target: str, rng) -> str:
    text = _pick(rng, ("nan", "inf", "-inf", "NaN"))
    if target == "rtstruct":
        return _contour_values(path, rng, text)
    ds = pydicom.dcmread(path)
    kw = _pick(rng, sorted(k for k in _NUMERIC[target] if k in ds))
    detail = _set_one_value(ds, kw, text, rng)
    _save(ds, path)
    return detail


def _absurd_value(path: Path, target: str, rng) -> str:
    ds = pydicom.dcmread(path)
    if rng.random() < 0.25:
        kw = _pick(rng, [k for k in _ABSURD_US[target] if k in ds])
        value = int(_pick(rng, (0, 1, 3, 65535, 4096)))
        if kw == "NumberOfFrames":
            _put_raw(ds, Tag(kw), "IS", str(value).encode())
        else:
            _put_raw(ds, Tag(kw), "US", struct.pack("<H", value))
        detail = f"{kw} = {value}"
    else:
        kw = _pick(rng, sorted(k for k in _NUMERIC[target] if k in ds))
        detail = _set_one_value(ds, kw, _pick(rng, _ABSURD[kw]), rng)
    _save(ds, path)
    return detail


_SHORT = {"ct": [(0x00200032, "DS"), (0x00200037, "DS"), (0x00280030, "DS"), (0x00281053, "DS"),
                 (0x00281052, "DS"), (0x00280010, "US"), (0x00200013, "IS"), (0x00080018, "UI"), (0x0020000E, "UI")],
          "rtdose": [(0x00200032, "DS"), (0x00280030, "DS"), (0x3004000C, "DS"), (0x3004000E, "DS"),
                     (0x00280008, "IS"), (0x00280010, "US"), (0x00200052, "UI")],
          "rtstruct": [(0x30060050, "DS"), (0x30060046, "IS"), (0x30060026, "LO"), (0x30060022, "IS"),
                       (0x30060084, "IS"), (0x00200052, "UI"), (0x30060024, "UI")]}


def _huge_length(path: Path, target: str, rng) -> str:
    data = bytearray(path.read_bytes())
    long_form = target != "rtstruct" and rng.random() < 0.4
    if long_form:   # Pixel Data (OW or OB): tag, VR, 2 reserved bytes, 4-byte length
        at = data.find(b"\xe0\x7f\x10\x00", 132)
        value = int(_pick(rng, (0x7FFFFFF0, 0xFFFFFFF0, 0xFFFFFFFF)))
        data[at + 8:at + 12] = struct.pack("<I", value)
        path.write_bytes(bytes(data))
        return f"Pixel Data length = {value:#x}"
    hits = []
    for tag, vr in _SHORT[target]:
        pattern = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
        start = data.find(pattern, 132)
        while start >= 0:
            hits.append((start, tag, vr))
            start = data.find(pattern, start + 1)
    at, tag, vr = _pick(rng, hits)
    value = int(_pick(rng, (0xFFF0, 0xFFFF, 0x8000)))
    data[at + 6:at + 8] = struct.pack("<H", value)
    path.write_bytes(bytes(data))
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr} length = {value:#x}"


_REVR = {"ct": [("PixelSpacing", "UL"), ("PixelSpacing", "FD"), ("RescaleSlope", "AT"), ("RescaleSlope", "US"),
                ("RescaleIntercept", "FL"), ("ImagePositionPatient", "US"), ("ImagePositionPatient", "SQ"),
                ("Rows", "DS"), ("PixelSpacing", "XX"), ("RescaleIntercept", "XX"), ("ImageOrientationPatient", "UN")],
         "rtdose": [("DoseGridScaling", "US"), ("DoseGridScaling", "UL"), ("DoseGridScaling", "FD"),
                    ("DoseGridScaling", "XX"), ("GridFrameOffsetVector", "FL"), ("GridFrameOffsetVector", "XX"),
                    ("PixelSpacing", "UL"), ("Rows", "DS"), ("ImagePositionPatient", "AT")],
         "rtstruct": [("ROIContourSequence/ContourSequence/ContourData", "FD"),
                      ("ROIContourSequence/ContourSequence/ContourData", "XX"),
                      ("ROIContourSequence/ContourSequence/ContourData", "US"),
                      ("StructureSetROISequence/ROINumber", "US"), ("ROIContourSequence/ReferencedROINumber", "XX"),
                      ("StructureSetROISequence/ROIName", "SQ"), ("ROIContourSequence/ContourSequence/NumberOfContourPoints", "UL")]}


def _wrong_vr(path: Path, target: str, rng) -> str:
    ds = pydicom.dcmread(path)
    what, vr = _pick(rng, _REVR[target])
    *seqs, kw = what.split("/")
    items = [it for it in _items(ds, tuple(seqs)) if kw in it]
    if not items:
        return f"{what}: not present"
    item = _pick(rng, items)
    _put_raw(item, Tag(kw), vr, _raw_bytes(item, kw))
    _save(ds, path)
    return f"{what} declared as {vr}"


_SYNTAXES = {"1.2.840.10008.1.2": "Implicit VR Little Endian", "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
             "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian", "1.2.840.10008.1.2.4.50": "JPEG Baseline",
             "1.2.840.10008.1.2.5": "RLE Lossless", "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
             "1.2.3.4.5.6.7": "an unknown UID"}


def _transfer_syntax(path: Path, target: str, rng) -> str:
    data = path.read_bytes()
    group_len = struct.unpack("<I", data[140:144])[0]   # (0002,0000) UL right after 'DICM'
    body = data[144 + group_len:]
    meta = read_file_meta_info(path)
    uid = _pick(rng, sorted(_SYNTAXES))
    meta.TransferSyntaxUID = uid
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(buf, meta, enforce_standard=True)
    path.write_bytes(data[:132] + buf.getvalue() + body)
    return f"TransferSyntaxUID = {uid} ({_SYNTAXES[uid]}), data set still Explicit VR Little Endian"


def _dup_name(path: Path, rng) -> Path:
    """A new name sorting before or after the original (the reader sees the copy first or last)."""
    stem = path.stem
    return path.with_name(f"A_dup_{stem}.dcm" if rng.random() < 0.5 else f"{stem}_zdup.dcm")


def _ct_pick_inner(folder: Path, rng) -> Path:
    files = target_files(folder, "ct")
    return files[int(rng.integers(1, len(files) - 1))] if len(files) > 2 else files[0]


def _dup_identical(path: Path, target: str, rng) -> tuple[Path, str]:
    new = _dup_name(path, rng)
    shutil.copyfile(path, new)
    return new, f"identical copy of {path.name}"


def _dup_different(path: Path, target: str, rng) -> tuple[Path, str]:
    new = _dup_name(path, rng)
    ds = pydicom.dcmread(path)
    others = [p for p in target_files(path.parent, "ct") if p != path]
    other = pydicom.dcmread(_pick(rng, others))
    how = _pick(rng, ("pixels", "position", "noise", "rescale"))
    if how == "pixels":
        ds.PixelData = other.PixelData
    elif how == "position":
        ds.ImagePositionPatient = other.ImagePositionPatient
    elif how == "noise":
        arr = ds.pixel_array.copy()
        arr += rng.integers(-200, 200, size=arr.shape).astype(arr.dtype)
        ds.PixelData = arr.tobytes()
    else:
        ds.RescaleIntercept = float(ds.RescaleIntercept) + 500
    _save(ds, new)
    return new, f"same SOPInstanceUID as {path.name}, different {how}"


def _dup_truncated(path: Path, target: str, rng) -> tuple[Path, str]:
    new = _dup_name(path, rng)
    data = path.read_bytes()
    keep = int(len(data) * rng.uniform(0.3, 0.98))
    new.write_bytes(data[:keep])
    return new, f"copy of {path.name} cut at byte {keep} of {len(data)}"


def _missing_for(path: Path, target: str, rng) -> str:
    ds = pydicom.dcmread(path)
    if target != "rtstruct":
        del ds.FrameOfReferenceUID
        detail = "FrameOfReferenceUID deleted"
    else:
        how = _pick(rng, ("referenced sequence", "roi references", "both"))
        if how != "roi references" and "ReferencedFrameOfReferenceSequence" in ds:
            del ds.ReferencedFrameOfReferenceSequence
        if how != "referenced sequence":
            for item in ds.StructureSetROISequence:
                if "ReferencedFrameOfReferenceUID" in item:
                    del item.ReferencedFrameOfReferenceUID
        detail = f"frame of reference deleted ({how})"
    _save(ds, path)
    return detail


def _missing_dose_scaling(path: Path, target: str, rng) -> str:
    ds = pydicom.dcmread(path)
    del ds.DoseGridScaling
    _save(ds, path)
    return "DoseGridScaling deleted"


def _contour_values(path: Path, rng, text: str | None = None) -> str:
    ds = pydicom.dcmread(path)
    items = _items(ds, ("ROIContourSequence", "ContourSequence"))
    i = int(rng.integers(len(items)))
    item = items[i]
    values = _raw_bytes(item, "ContourData").decode("latin-1").strip(" \0").split("\\")
    how = text or _pick(rng, ("2£.81", "nan", "inf", "1e30", "drop", "empty", "letters"))
    j = int(rng.integers(len(values)))
    if how == "drop":
        values.pop(j)
    elif how == "empty":
        values = []
    elif how == "letters":
        values[j] = "abc"
    else:
        values[j] = how
    _put_raw(item, Tag("ContourData"), "DS", "\\".join(values).encode("latin-1"))
    _save(ds, path)
    return f"ContourData of contour item {i}: {how}" + ("" if how in ("drop", "empty") else f" at value {j}")


def _contour_data(path: Path, target: str, rng) -> str:
    return _contour_values(path, rng)


def _missing_roi_number(path: Path, target: str, rng) -> str:
    ds = pydicom.dcmread(path)
    where = _pick(rng, ("StructureSetROISequence/ROINumber", "ROIContourSequence/ReferencedROINumber",
                        "RTROIObservationsSequence/ReferencedROINumber"))
    seq, kw = where.split("/")
    items = [it for it in ds.get(seq, []) if kw in it]
    if not items:
        return f"{where}: not present"
    i = int(rng.integers(len(items)))
    del items[i][kw]
    _save(ds, path)
    return f"{where} deleted from item {i}"


_IN_PLACE = {"byte_flip": _byte_flip, "truncate": _truncate, "delete_tag": _delete_tag, "nan_inf": _nan_inf,
             "absurd_value": _absurd_value, "huge_length": _huge_length, "wrong_vr": _wrong_vr,
             "transfer_syntax": _transfer_syntax, "missing_for": _missing_for,
             "missing_dose_scaling": _missing_dose_scaling, "contour_data": _contour_data,
             "missing_roi_number": _missing_roi_number}
_ADDED = {"dup_identical": _dup_identical, "dup_different": _dup_different, "dup_truncated": _dup_truncated}


def mutate(folder: Path, kind: str, rng: np.random.Generator) -> Mutation:
    """Damage one file of the demo patient in ``folder`` (or add one beside them), as ``kind`` says.

    Parameters
    ----------
    folder : a patient folder written by :func:`medhash.demo.write_phantom` (it is changed in place).
    kind : a key of :data:`KINDS`.
    rng : every random choice (file type, file, tag, value, position) is drawn from it.

    Returns
    -------
    Mutation : the damaged (or added) file and what was done to it.
    """
    spec = KINDS[kind]
    target = _pick(rng, spec.targets)
    if target == "ct":
        path = _ct_pick_inner(folder, rng)
    else:
        path = target_files(folder, target)[0]
    if kind in _ADDED:
        added, detail = _ADDED[kind](path, target, rng)
        return Mutation(kind, target, added, detail, twin=path)
    return Mutation(kind, target, path, _IN_PLACE[kind](path, target, rng))
