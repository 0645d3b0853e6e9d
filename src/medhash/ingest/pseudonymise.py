"""Pseudonymisation of DICOM data sets on the way into the archive (keyed, repeatable).

A secret key (a file of at least 32 random bytes, see :func:`make_key`) drives every choice, so
the same key gives the same pseudonyms on every run and a re-ingest is idempotent, while nobody
without the key can link a pseudonym back to the original identifier.

What :meth:`Pseudonymiser.dataset` does, against DICOM PS3.15 Annex E, Table E.1-1 (Basic
Application Level Confidentiality Profile), with these options:

* **Retain UIDs: no.** Every UI element that is not a well-known class or transfer-syntax UID is
  replaced by ``2.25.<int>`` made from HMAC-SHA256(key, "uid:" + UID) (a UUID of version 8,
  RFC 9562). The same UID always gives the same new UID, in every file and every nested sequence,
  so CT ↔ RTDOSE ↔ RTSTRUCT references stay resolvable.
* **Retain Longitudinal Temporal Information, Modified Dates.** Every DA element, and the date part
  of every DT element, is shifted by a per-patient offset of -365 .. -1 days (from the key and the
  original PatientID); intervals within a patient are kept. TM elements are kept as they are. A
  date that cannot be parsed is removed.
* **Retain Patient Characteristics.** PatientSex, PatientAge, PatientSize, PatientWeight are kept.
  PatientBirthDate is emptied (not shifted: with the age kept it adds nothing a model needs).
* PatientID and OtherPatientIDs become ``P`` + 16 hex digits of HMAC-SHA256(key, "pid:" + ID);
  PatientName becomes the same pseudonym.
* Free text and names that can carry identity are removed (:data:`REMOVE`), or emptied where the
  element is Type 2 (:data:`EMPTY`), or set to a dummy where it is Type 1 (:data:`DUMMY`). Every
  other element of VR PN is removed as well.
* Private elements are removed (no Retain Safe Private option).
* PatientIdentityRemoved = YES, LongitudinalTemporalInformationModified = MODIFIED, and
  DeidentificationMethod plus DeidentificationMethodCodeSequence (CID 7050) say what was done.

Kept on purpose (geometry and dose need them): ImagePositionPatient, ImageOrientationPatient,
PixelSpacing, SliceThickness, RescaleSlope/Intercept, DoseGridScaling, GridFrameOffsetVector,
DoseUnits/Type/SummationType, ROI names (Annex E lists ROI Name as removable; medhash needs them
and they are anatomical terms by convention: check yours), contour data, pixel data. Pixel data are
not inspected for burned-in text (no Clean Pixel Data option).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import os
import secrets
from pathlib import Path

import pydicom
from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from ..core.records import Problem
from ..errors import InputError
from ..io.dicom import iter_files, read_header

KEY_MIN_BYTES = 32
"""A key file must hold at least this many bytes (256 bits)."""

KEEP_UID_KEYWORDS = frozenset({
    "SOPClassUID", "ReferencedSOPClassUID", "TransferSyntaxUID", "MediaStorageSOPClassUID",
    "ImplementationClassUID", "AffectedSOPClassUID", "RequestedSOPClassUID", "CodingSchemeUID",
    "ReferencedSOPClassUIDInFile", "ReferencedTransferSyntaxUIDInFile", "ContextGroupExtensionCreatorUID",
    "PrivateInformationCreatorUID", "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID",
})
"""UI elements that name a class, syntax or scheme, never an instance: kept as they are. Any UID
found in pydicom's UID dictionary (a registered, well-known UID) is kept too."""

REMOVE = frozenset({
    # institution, equipment and people (Annex E: X)
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCodeSequence",
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence", "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "OperatorsName", "OperatorIdentificationSequence",
    "RequestingPhysician", "StationName", "DeviceSerialNumber", "ResponsiblePerson",
    "ResponsibleOrganization", "ContentCreatorName", "ReviewerName",
    # descriptions and comments (Annex E: X)
    "StudyDescription", "SeriesDescription", "ProtocolName", "RequestedProcedureDescription",
    "PerformedProcedureStepDescription", "PerformedProcedureStepID", "AdmittingDiagnosesDescription",
    "DerivationDescription", "ImageComments", "AdditionalPatientHistory", "PatientComments",
    "AcquisitionComments", "RequestAttributesSequence", "ReferencedPatientSequence",
    # patient (Annex E: X)
    "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
    "PatientAddress", "PatientTelephoneNumbers", "MilitaryRank", "BranchOfService", "EthnicGroup",
    "Occupation", "MedicalRecordLocator", "IssuerOfPatientID", "PatientReligiousPreference",
    "CountryOfResidence", "RegionOfResidence", "MedicalAlerts", "Allergies", "SpecialNeeds",
    "PatientBirthTime", "PatientInsurancePlanCodeSequence",
    # radiotherapy free text (Annex E: X)
    "RTPlanName", "RTPlanDescription", "StructureSetName", "StructureSetDescription", "ROIDescription",
    "ROIGenerationDescription", "ROIInterpreter", "ROIObservationDescription", "ROIObservationLabel",
    "FractionGroupDescription", "DoseComment",
})
"""Keywords removed wherever they appear (also inside sequences)."""

EMPTY = frozenset({"ReferringPhysicianName", "AccessionNumber", "StudyID", "PatientBirthDate"})
"""Type 2 keywords kept present with an empty value (Annex E: Z)."""

DUMMY = {"StructureSetLabel": "PSEUDONYMISED", "RTPlanLabel": "PSEUDONYMISED"}
"""Type 1 keywords whose value is replaced by a dummy (Annex E: D)."""

_METHOD_CODES = [("113100", "Basic Application Confidentiality Profile"),
                 ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
                 ("113108", "Retain Patient Characteristics Option")]
METHOD = "medhash keyed: PS3.15 E.1-1 basic, modified dates, UIDs remapped"


def make_key(path: str | os.PathLike[str]) -> Path:
    """Write a new key of 32 random bytes to ``path`` with mode 0600; never overwrites a file.

    Raises
    ------
    InputError : ``path`` exists already (a key once used must not be replaced by accident: the
        pseudonyms of new data would no longer match those already in the archive).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"{path}: file exists; a key is never overwritten (remove it yourself if it was "
                         "never used, or choose another path)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot create the key file ({exc.strerror})") from None
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(KEY_MIN_BYTES))
    return path


def load_key(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the key file at ``path`` (at least :data:`KEY_MIN_BYTES`).

    Raises
    ------
    InputError : the file is missing, unreadable or too short.
    """
    path = Path(path)
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the pseudonymisation key ({exc.strerror}); create one with "
                         f"`medhash keygen {path}`") from None
    if len(key) < KEY_MIN_BYTES:
        raise InputError(f"{path}: the pseudonymisation key has {len(key)} bytes; it must hold at least "
                         f"{KEY_MIN_BYTES} random bytes (create one with `medhash keygen KEYFILE`)")
    return key


def _is_well_known(uid: str) -> bool:
    """True for a UID registered in PS3.6 (pydicom's UID dictionary): classes, syntaxes, frames."""
    return str(uid) in UID_dictionary


class Pseudonymiser:
    """Keyed, deterministic pseudonyms for patient ids, UIDs and dates.

    Parameters
    ----------
    key : bytes, at least :data:`KEY_MIN_BYTES` long (see :func:`load_key`).
    """

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) < KEY_MIN_BYTES:
            raise InputError(f"the pseudonymisation key must be at least {KEY_MIN_BYTES} bytes, "
                             f"got {len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__}")
        self.key = bytes(key)
        self._uids: dict[str, str] = {}

    def _mac(self, label: str, value: str) -> bytes:
        return hmac.new(self.key, f"{label}:{value}".encode("utf-8"), hashlib.sha256).digest()

    def patient_id(self, original: str) -> str:
        """``"P"`` + the first 16 hex digits of HMAC-SHA256(key, "pid:" + original)."""
        return "P" + self._mac("pid", str(original)).hex()[:16]

    def uid(self, original: str) -> str:
        """A new UID ``2.25.<int>`` (at most 44 characters) for ``original``, the same on every call.

        The integer is the first 16 bytes of HMAC-SHA256(key, "uid:" + original) with the version
        and variant bits of a version-8 UUID set (RFC 9562), as PS3.5 B.2 asks of 2.25 UIDs.
        """
        original = str(original).strip().rstrip("\x00")
        new = self._uids.get(original)
        if new is None:
            n = int.from_bytes(self._mac("uid", original)[:16], "big")
            n = (n & ~(0xF << 76)) | (0x8 << 76)      # version 8
            n = (n & ~(0x3 << 62)) | (0x2 << 62)      # variant 10
            new = self._uids[original] = f"2.25.{n}"
        return new

    def date_offset_days(self, patient_id: str) -> int:
        """Days (-365 .. -1) added to every date of the patient with this original id."""
        return -1 - int.from_bytes(self._mac("date", str(patient_id))[:8], "big") % 365

    # ------------------------------------------------------------------------------ data sets
    def dataset(self, ds: Dataset) -> Dataset:
        """Pseudonymise ``ds`` in place (file meta and nested sequences too) and return it.

        See the module docstring for the profile. The patient's date offset comes from the
        original PatientID (or from the StudyInstanceUID when PatientID is empty).
        """
        pid = str(ds.get("PatientID", "") or "").strip()
        offset = self.date_offset_days(pid or "study:" + str(ds.get("StudyInstanceUID", "")))
        pseudonym = self.patient_id(pid) if pid else ""
        self._rewrite(ds, offset, pseudonym)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            self._rewrite(meta, offset, pseudonym)
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        ds.DeidentificationMethod = METHOD
        codes = []
        for value, meaning in _METHOD_CODES:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            codes.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(codes)
        return ds

    def _rewrite(self, ds: Dataset, offset: int, pseudonym: str) -> None:
        for tag in list(ds.keys()):
            if tag.is_private:
                del ds[tag]
                continue
            elem = ds[tag]
            kw = elem.keyword
            if kw in REMOVE:
                del ds[tag]
            elif kw in EMPTY:
                elem.value = ""
            elif kw in DUMMY:
                elem.value = DUMMY[kw]
            elif kw in ("PatientID", "PatientName"):
                elem.value = pseudonym
            elif kw == "OtherPatientIDs":
                elem.value = [self.patient_id(v) for v in _values(elem.value) if v] if elem.value else ""
            elif elem.VR == "SQ":
                for item in elem.value:
                    self._rewrite(item, offset, pseudonym)
            elif elem.VR == "PN":
                del ds[tag]
            elif elem.VR == "UI":
                if kw not in KEEP_UID_KEYWORDS and elem.value:
                    new = [v if _is_well_known(str(v)) else self.uid(v) for v in _values(elem.value)]
                    elem.value = new[0] if elem.VM == 1 else new
            elif elem.VR in ("DA", "DT") and elem.value:
                shifted = [_shift(str(v), offset, elem.VR) for v in _values(elem.value)]
                if any(v is None for v in shifted):
                    del ds[tag]
                else:
                    elem.value = shifted[0] if len(shifted) == 1 else shifted


def _values(value) -> list:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _shift(value: str, days: int, vr: str) -> str | None:
    """``value`` (DA ``YYYYMMDD`` or DT ``YYYYMMDD...``) moved by ``days``; None when unparsable."""
    text = value.strip().replace(".", "") if vr == "DA" else value.strip()
    if len(text) < 8 or not text[:8].isdigit() or (vr == "DA" and len(text) != 8):  # DA ranges: removed
        return None
    try:
        day = _dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None
    return (day + _dt.timedelta(days=days)).strftime("%Y%m%d") + text[8:]


def as_pseudonymiser(value: "Pseudonymiser | bytes | str | os.PathLike[str]") -> Pseudonymiser:
    """A :class:`Pseudonymiser` from itself, a key (bytes) or a key file path."""
    if isinstance(value, Pseudonymiser):
        return value
    if isinstance(value, (bytes, bytearray)):
        return Pseudonymiser(bytes(value))
    return Pseudonymiser(load_key(value))


def pseudonymise_files(sources: list[Path], dest: Path, pseudonymiser: Pseudonymiser
                       ) -> tuple[list[Path], list]:
    """Write a pseudonymised copy of every DICOM file under ``sources`` below ``dest``.

    Source ``i`` is copied to ``dest/i`` with its relative layout kept (a file given directly
    keeps its name), so a staged path maps back to its original by its prefix.

    Returns
    -------
    (staged roots, one per source, in order; problems for files that could not be read or
    written, with their original path)
    """

    roots, problems = [], []
    for i, src in enumerate(map(Path, sources)):
        root = dest / str(i)
        roots.append(root / src.name if src.is_file() else root)
        for path in iter_files([src]):
            try:
                read_header(path)  # the reader's own checks and messages for non-DICOM files
                ds = pydicom.dcmread(path, force=True)
                pseudonymiser.dataset(ds)
            except InputError as exc:
                problems.append(Problem(str(path), str(exc).removeprefix(f"{path}: ")))
                continue
            except Exception as exc:  # pydicom raises many types on damaged files
                problems.append(Problem(str(path), f"cannot read for pseudonymisation ({type(exc).__name__}: "
                                        f"{exc}); the file may be truncated or corrupt; skipped"))
                continue
            out = root / (path.name if src.is_file() else path.relative_to(src))
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                ds.save_as(out, enforce_file_format=False)
            except Exception as exc:
                problems.append(Problem(str(path), f"cannot write the pseudonymised copy ({type(exc).__name__}: "
                                        f"{exc}); skipped"))
    return roots, problems
