"""Test helper (not a test file): compressed copies of demo DICOM folders.

``compress_folder(src, dst, ct="jpeg-lossless", dose="rle")`` writes a copy of every file under ``src``
below ``dst`` (same relative paths): CT slices and RTDOSE in the transfer syntaxes asked for, other
objects (RTSTRUCT) unchanged. The encoders:

========================  ==========================  ===========================================
``how``                   transfer syntax             encoder
========================  ==========================  ===========================================
``rle``                   RLE Lossless (.5)           pydicom (8 and 16 bits); dcmtk's dcmcrle for
                                                      32-bit RTDOSE (pydicom cannot), else left as is
``j2k``                   JPEG 2000 lossless (.4.90)  pydicom with pylibjpeg-openjpeg (up to 24 bits)
``jpeg-lossless``         JPEG Lossless SV1 (.4.70)   dcmtk's dcmcjpeg (8 and 16 bits)
``jpeg-ls``               JPEG-LS lossless (.4.80)    dcmtk's dcmcjpls
``jpeg-baseline``         JPEG Baseline (.4.50)       dcmtk's dcmcjpeg +eb (lossy, 8 bits)
``jpeg-extended``         JPEG Extended (.4.51)       dcmtk's dcmcjpeg +ee (lossy, 12 bits)
========================  ==========================  ===========================================

:func:`missing` says which dcmtk tool a choice needs and lacks (tests skip with it).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
from pydicom.uid import JPEG2000Lossless, RLELossless

DCMTK = {name: f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else shutil.which(name)
         for name in ("dcmcjpeg", "dcmcjpls", "dcmcrle")}
SYNTAX = {"rle": "1.2.840.10008.1.2.5", "j2k": "1.2.840.10008.1.2.4.90", "jpeg-lossless": "1.2.840.10008.1.2.4.70",
          "jpeg-ls": "1.2.840.10008.1.2.4.80", "jpeg-baseline": "1.2.840.10008.1.2.4.50",
          "jpeg-extended": "1.2.840.10008.1.2.4.51"}
_TOOL = {"jpeg-lossless": ["dcmcjpeg"], "jpeg-ls": ["dcmcjpls"], "jpeg-baseline": ["dcmcjpeg", "+eb"],
         "jpeg-extended": ["dcmcjpeg", "+ee"], "rle": ["dcmcrle"]}


def missing(*hows: str | None) -> str | None:
    """A skip reason when a dcmtk encoder that one of ``hows`` needs is not installed, else None."""
    for how in hows:
        if how in _TOOL and how != "rle" and DCMTK[_TOOL[how][0]] is None:
            return f"dcmtk's {_TOOL[how][0]} is not installed (apt-get install dcmtk)"
    return None


def compress_file(src: Path, dst: Path, how: str) -> bool:
    """Write ``src`` compressed as ``how`` to ``dst``; False (nothing written) when that encoder cannot
    take this file (pydicom's RLE and 32 bits without dcmcrle, JPEG 2000 over 24 bits)."""
    ds = pydicom.dcmread(src)
    bits = int(ds.BitsAllocated)
    if how in ("rle", "j2k") and not (how == "rle" and bits > 16):
        if how == "j2k" and int(ds.BitsStored) > 24:
            return False
        ds.compress(RLELossless if how == "rle" else JPEG2000Lossless)
        ds.save_as(dst, enforce_file_format=True)
        return True
    if how == "rle" and DCMTK["dcmcrle"] is None:
        return False
    tool, *args = _TOOL[how]
    if DCMTK[tool] is None or (how != "rle" and bits > 16):
        return False
    subprocess.run([DCMTK[tool], *args, str(src), str(dst)], check=True, capture_output=True, timeout=60)
    return True


def compress_folder(src: Path, dst: Path, ct: str, dose: str | None = "rle") -> Path:
    """Copy the DICOM folder ``src`` to ``dst`` with CT slices compressed as ``ct`` and RTDOSE as ``dose``
    (None, or an encoder that cannot take it: left uncompressed); returns ``dst``."""
    for path in sorted(p for p in Path(src).rglob("*") if p.is_file()):
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        modality = str(pydicom.dcmread(path, stop_before_pixels=True).get("Modality", ""))
        how = ct if modality == "CT" else dose if modality == "RTDOSE" else None
        if how is None or not compress_file(path, out, how):
            shutil.copyfile(path, out)
    return dst


def syntaxes(folder: Path) -> dict[tuple[str, str], int]:
    """(Modality, transfer syntax UID) -> number of files under ``folder``."""
    out: dict[tuple[str, str], int] = {}
    for path in Path(folder).rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        key = (str(ds.Modality), str(ds.file_meta.TransferSyntaxUID))
        out[key] = out.get(key, 0) + 1
    return out
