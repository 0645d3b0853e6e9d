"""What both ways of ``medhash pull`` share: the query check, the progress bar, the ingest of what
arrived and the :class:`PullReport`.

Both ways (:mod:`.dimse`, :mod:`.dicomweb`) end in :func:`medhash.ingest.ingest` of a temporary
folder (deleted afterwards). What arrived is ingested, what failed is listed in :attr:`PullReport.failed`
with the reason. Network problems before anything could be asked (PACS unreachable, association rejected,
HTTP errors of the query) raise :class:`~medhash.errors.MedhashError` with a message for people.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..errors import MedhashError
from ..ingest import EXIT_NO_INPUT, EXIT_OK, EXIT_PARTIAL, IngestReport, ingest
from ..store import Archive


@dataclass
class PullReport:
    """Outcome of one pull.

    Attributes
    ----------
    source : what was asked (``dimse://AEC@host:port`` or the DICOMweb URL).
    method : ``move``, ``get`` or ``dicomweb`` (the one that delivered, after any fallback).
    studies : StudyInstanceUIDs the query found.
    files_received : DICOM files that arrived.
    failed : ``{"what": ..., "reason": ...}`` for every study, series or instance that did not arrive.
    ingest : the ingest report of what arrived (None when nothing arrived).
    """

    source: str
    method: str
    studies: list[str] = field(default_factory=list)
    files_received: int = 0
    failed: list[dict] = field(default_factory=list)
    ingest: IngestReport | None = None

    @property
    def exit_code(self) -> int:
        """4 when nothing was found (or nothing usable arrived), 1 when something failed, else 0."""
        if not self.studies:
            return EXIT_NO_INPUT
        if self.ingest is None:
            return EXIT_PARTIAL if self.failed else EXIT_NO_INPUT
        code = self.ingest.exit_code
        if code == EXIT_OK and self.failed:
            return EXIT_PARTIAL
        return code

    def to_dict(self) -> dict:
        return {"source": self.source, "method": self.method, "studies": self.studies,
                "files_received": self.files_received, "failed": self.failed,
                "ingest": self.ingest.to_dict() if self.ingest is not None else None}


def check_query(patient: str | None, study: str | None) -> None:
    """Raise unless exactly one of ``patient`` and ``study`` is given, as one exact value."""
    if (patient is None) == (study is None):
        raise MedhashError("give a patient id or a study instance UID (one of them)")
    value = patient if patient is not None else study
    if not value.strip() or any(c in value for c in "*?\\"):
        # a wildcard (or an empty value, which matches everything) could pull a whole PACS
        raise MedhashError(f"{'patient id' if patient is not None else 'study UID'} must be one exact value, "
                           f"without wildcards (* ?) or backslashes: {value!r}")


def progress_bar(total: int, progress: bool):
    """The files-received bar (``total`` 0: unknown), shown when ``progress``."""
    return tqdm(total=total or None, desc="receiving", unit="file", disable=not progress, leave=False)


def ingest_received(archive, report: PullReport, folder: Path, progress: bool, pseudonymise) -> PullReport:
    """Ingest ``folder`` (what arrived) into ``archive`` (an Archive, or its folder: created if missing)
    when anything arrived; the ingest report goes into ``report``."""
    if report.files_received:
        archive = archive if isinstance(archive, Archive) else Archive(archive, create=True)
        report.ingest = ingest(archive, [folder], format="dicom", progress=progress, pseudonymise=pseudonymise)
    return report
