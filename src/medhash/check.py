"""The whole check of an archive, what ``medhash check`` runs: :func:`check_archive`.

It runs, in this order, :func:`medhash.store.check.check_store` (catalog, arrays, dose values, leftovers
of interrupted writes, spool), :func:`medhash.retrieval.verify.check_retrieval` (models, feature caches,
indexes) and :func:`medhash.dose.verify.check_dose_models`, and with ``repair`` applies every finding's
fix in that order (leftovers first, so that an index is rebuilt on clean feature caches), holding the
archive's writer lock, then checks again. The report's exit code is 0 only when the archive is clean:
no damage, no incomplete series and no leftover remains (notes do not count).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import EXIT_OK, EXIT_PARTIAL, ArchiveError
from .store import check as store_check
from .store.durable import file_lock
from .store.layout import archive_dir, lock_path


@dataclass
class CheckReport:
    """What :func:`check_archive` found (and, with repair, did).

    Attributes
    ----------
    archive : the archive folder.
    findings : what the (first) check found, each with ``repaired`` set when repair fixed it.
    remaining : with repair, what the check after the repairs still finds; else ``findings``.
    repair : whether repairs were applied.
    """

    archive: Path
    findings: list = field(default_factory=list)
    remaining: list = field(default_factory=list)
    repair: bool = False

    @property
    def clean(self) -> bool:
        """True when no damage, no incomplete series and no leftover remains."""
        return not any(f.kind != store_check.NOTE for f in self.remaining)

    @property
    def exit_code(self) -> int:
        """0 when :attr:`clean`, else 1."""
        return EXIT_OK if self.clean else EXIT_PARTIAL

    def counts(self, findings: list | None = None) -> dict[str, int]:
        """kind -> number of findings (of ``remaining`` by default)."""
        findings = self.remaining if findings is None else findings
        return {kind: sum(f.kind == kind for f in findings) for kind in store_check.KINDS}

    def to_dict(self) -> dict:
        """JSON-ready: ``archive``, ``clean``, ``repair``, ``findings``, ``remaining``, ``counts``."""
        return {"archive": str(self.archive), "clean": self.clean, "repair": self.repair,
                "findings": [f.to_dict() for f in self.findings],
                "remaining": [f.to_dict() for f in self.remaining], "counts": self.counts()}


def find_problems(archive) -> list:
    """Every finding of the three checks (module docstring) on ``archive`` (a path or an Archive).

    Raises
    ------
    ArchiveError : the folder holds no catalog.
    """
    from .retrieval import verify  # start-up: faiss and the hashers only when an archive is checked
    from .dose.verify import check_dose_models  # start-up: as above

    return store_check.check_store(archive) + verify.check_retrieval(archive) + check_dose_models(archive)


def check_archive(archive, repair: bool = False) -> CheckReport:
    """Check an archive and, with ``repair``, fix what can be fixed (module docstring).

    Parameters
    ----------
    archive : the archive folder (or an open :class:`~medhash.store.Archive`).
    repair : apply each finding's fix, holding the archive's writer lock, then check again.

    Returns
    -------
    CheckReport

    Raises
    ------
    ArchiveError : not an archive, or (with repair) another process is writing to it.
    """
    path = archive_dir(archive)
    if not path.is_dir():
        raise ArchiveError(f"{path}: no such archive folder", param="archive")
    findings = find_problems(path)
    report = CheckReport(path, findings, findings, repair)
    if not repair or not any(f.fix is not None for f in findings):
        return report
    busy = f"{path}: another medhash process is writing to this archive; repair it when that has finished"
    with file_lock(lock_path(path), wait_s=0, busy=busy):
        for f in findings:
            store_check.apply_fix(f)
    report.remaining = find_problems(path)
    return report
