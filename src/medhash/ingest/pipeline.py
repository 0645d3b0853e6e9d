"""Ingest: sources (DICOM folders, OpenKBP patients) → the archive, one series at a time.

Every problem is collected with its path and the run goes on; what was already in the archive
is never touched. :func:`ingest` is what ``medhash ingest`` and ``medhash listen`` call; the archive
(:mod:`medhash.store`) knows nothing of readers.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import InputError
from ..errors import EXIT_ARCHIVE, EXIT_NO_INPUT, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE  # noqa: F401  (re-exported)
from ..store import Archive
from ..io.openkbp import find_patients, read_openkbp
from ..core.records import Problem, Volume

log = logging.getLogger(__name__)

FORMATS = ("auto", "dicom", "openkbp")



@dataclass
class IngestReport:
    """Outcome of one ingest run.

    Attributes
    ----------
    series_added, slices_added : what was written (completions included).
    series_completed : series that were in the archive incomplete and were completed by this run
        (their slices replaced: :mod:`medhash.store.series`); counted in ``series_added`` too.
    series_existing : series found that the archive already held (not read again).
    slices_skipped_no_body : slices of the added series left out for lack of body.
    patients : archive patient ids of the added series.
    problems : errors and warnings, each with its path.
    """

    series_added: int = 0
    series_completed: int = 0
    series_existing: int = 0
    slices_added: int = 0
    slices_skipped_no_body: int = 0
    patients: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]

    @property
    def exit_code(self) -> int:
        """See the EXIT_* constants of this module (documented in the README)."""
        if self.series_added == 0 and self.series_existing == 0:
            return EXIT_NO_INPUT
        return EXIT_PARTIAL if self.errors else EXIT_OK

    def to_dict(self) -> dict:
        return {"series_added": self.series_added, "series_completed": self.series_completed,
                "series_existing": self.series_existing,
                "slices_added": self.slices_added, "slices_skipped_no_body": self.slices_skipped_no_body,
                "patients": self.patients,
                "errors": [{"path": p.path, "message": p.message} for p in self.errors],
                "warnings": [{"path": p.path, "message": p.message} for p in self.warnings]}


def detect_format(source: Path) -> str:
    """``"openkbp"`` when the source holds OpenKBP patient folders, else ``"dicom"``."""
    return "openkbp" if find_patients([source]) else "dicom"


def ingest(archive: Archive, sources: Iterable[str | Path], format: str = "auto",
           progress: bool = False, pseudonymise=None) -> IngestReport:
    """Read the sources and add every new series to ``archive``.

    Parameters
    ----------
    archive : an open :class:`Archive`.
    sources : files or folders (searched recursively).
    format : ``"auto"`` (per source: OpenKBP if it holds ``pt_*`` folders with ``ct.csv``, else
        DICOM), ``"dicom"`` or ``"openkbp"``.
    progress : show progress bars (tqdm, on stderr).
    pseudonymise : None, or a key file path, a key (bytes) or a
        :class:`~medhash.ingest.pseudonymise.Pseudonymiser`: every DICOM file is pseudonymised into a
        temporary folder (deleted afterwards) that is then ingested, so the archive never sees the
        original PatientID, UIDs or dates; OpenKBP patient ids are mapped through the same
        pseudonym. See :mod:`medhash.ingest.pseudonymise`.

    Returns
    -------
    IngestReport

    Raises
    ------
    ArchiveError : the archive was opened read-only, or another process holds its writer lock.
    """
    archive.check_writable()
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {format!r}")
    if pseudonymise is not None:
        from .pseudonymise import as_pseudonymiser  # start-up: pydicom only when pseudonymising
        pseudonymiser = as_pseudonymiser(pseudonymise)  # a bad key fails before anything is read
        with tempfile.TemporaryDirectory(prefix="medhash-pseudo-") as tmp:
            return _ingest(archive, sources, format, progress, pseudonymiser, Path(tmp))
    return _ingest(archive, sources, format, progress, None, None)


def _ingest(archive: Archive, sources, format: str, progress: bool, pseudonymiser, staging: Path | None
            ) -> IngestReport:
    from ..io.dicom import iter_files, read_dicom  # start-up: pydicom only when ingesting, not for `medhash info`

    started = time.time()
    report = IngestReport()
    by_format: dict[str, list[Path]] = {"dicom": [], "openkbp": []}
    for src in map(Path, sources):
        if not src.exists():
            report.problems.append(Problem(str(src), "no such file or folder"))
            continue
        if src.is_dir() and next(iter_files([src]), None) is None:
            links: list[Problem] = []
            list(iter_files([src], links))  # an empty folder, or one whose links lead nowhere new
            report.problems += links
            report.problems.append(Problem(str(src), "folder is empty: nothing to ingest"))
            continue
        fmt = detect_format(src) if format == "auto" else format
        by_format[fmt].append(src)

    known = archive.series_instances()
    readers = []
    dicom_inputs = by_format["dicom"]
    staged: dict[str, str] = {}
    if pseudonymiser is not None and dicom_inputs:
        from .pseudonymise import pseudonymise_files  # start-up: pydicom only when pseudonymising
        roots, problems = pseudonymise_files(dicom_inputs, staging, pseudonymiser)
        report.problems += problems
        staged = {str(staging / str(i)): str(src if src.is_dir() else src.parent)
                  for i, src in enumerate(dicom_inputs)}
        dicom_inputs = [r for r in roots if r.exists()]
    if by_format["openkbp"]:
        readers.append(read_openkbp(by_format["openkbp"], progress=progress, known_series=set(known)))
        if format == "openkbp":
            for src in by_format["openkbp"]:
                if not find_patients([src]):
                    report.problems.append(Problem(str(src), "no OpenKBP patient folder (pt_*/ct.csv with "
                                                   "voxel_dimensions.csv) found"))
    if dicom_inputs:
        readers.append(read_dicom(dicom_inputs, progress=progress, known_series=known))
    for reader in readers:
        for item in _guarded(reader, report):
            if staged and isinstance(item, Problem):
                item = _unstage(item, staged)
            if pseudonymiser is not None and isinstance(item, Volume):
                item.info["pseudonymised"] = True   # `medhash patients` shows it (Archive.patient_summaries)
            if pseudonymiser is not None and isinstance(item, Volume) and item.source == "openkbp":
                pid = pseudonymiser.patient_id(item.patient_id)
                item = dataclasses.replace(item, patient_id=pid, series_uid=f"openkbp:{pid}")
            if isinstance(item, Problem):
                if item.level == "info":
                    report.series_existing += 1
                else:
                    report.problems.append(item)
                continue
            _add(archive, item, report)
    if by_format["dicom"] and report.series_added == 0 and report.series_existing == 0 \
            and not any(p.level == "error" for p in report.problems):
        report.problems.append(Problem(", ".join(map(str, by_format["dicom"])), "no CT series found"))
    archive.record_run(started, report.series_added, report.slices_added, report.slices_skipped_no_body,
                       len(report.errors), len(report.warnings))
    return report


def _guarded(reader: Iterator[Volume | Problem], report: IngestReport) -> Iterator[Volume | Problem]:
    """The items of ``reader``; should it fail (which the readers do not do for any input file), the
    failure is reported and the run goes on with the next reader, keeping what was already added."""
    try:
        yield from reader
    except Exception as exc:
        log.debug("reader failed", exc_info=True)
        report.problems.append(Problem("(sources)", f"reading stopped early ({type(exc).__name__}: {exc}); "
                                       "the series read before were ingested; the others were not"))


def _unstage(problem: Problem, staged: dict[str, str]) -> Problem:
    """The problem with staging paths (pseudonymised copies) replaced by the original folders."""
    path, message = problem.path, problem.message
    for tmp, orig in sorted(staged.items(), key=lambda kv: -len(kv[0])):  # .../1 after .../10
        path, message = path.replace(tmp, orig), message.replace(tmp, orig)
    return dataclasses.replace(problem, path=path, message=message)


def _add(archive: Archive, vol: Volume, report: IngestReport) -> None:
    report.problems += vol.warnings
    try:
        result = archive.add_volume(vol)
    except InputError as exc:  # values the archive refuses (the readers validate first: a last guard)
        report.problems.append(Problem(vol.series_uid, str(exc)))
        return
    if not result.added:
        report.series_existing += 1
        return
    report.series_added += 1
    report.series_completed += int(result.completed)
    report.slices_added += result.slices
    report.slices_skipped_no_body += result.skipped_no_body
    report.patients.append(result.patient_id)
    if result.patient_id != vol.patient_id and not result.completed:
        report.problems.append(Problem(vol.series_uid, f"patient {vol.patient_id} already has a CT series in the "
                                       f"archive; this series is stored as patient {result.patient_id}",
                                       level="warning"))
    if result.slices == 0:
        report.problems.append(Problem(vol.series_uid, f"series of patient {result.patient_id}: no slice has body "
                                       "(>= 1 % of the grid above -500 HU); recorded, no slices stored",
                                       level="warning"))
