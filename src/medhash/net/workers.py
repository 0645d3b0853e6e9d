"""The ingest processes of the listener: :func:`medhash.ingest.ingest` of spooled study folders in
processes of their own, so that reading series (CPU-bound) does not take the GIL from the threads that
receive.

Each process dies with the listener (a killed listener leaves no ingest running), leaves Ctrl-C to the
listener, runs at a lower priority (:data:`INGEST_NICE`) and keeps the archive open between studies.
Their writes to the archive take turns (:data:`LOCK_WAIT_S`). Where no process can be started, or one
died, studies are ingested in the listener's process, one at a time.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..ingest import IngestReport, ingest
from ..lifeline import die_with_parent
from ..store import Archive

log = logging.getLogger(__name__)

INGEST_PROCESSES = min(2, os.cpu_count() or 1)
"""Studies ingested at the same time, each in a process of its own (never two of the same study); their
writes to the archive take turns (:data:`LOCK_WAIT_S`)."""
INGEST_NICE = 10
"""Niceness added to the ingest processes: on a busy machine the threads that receive (each C-STORE waits
for them) get the CPU first, and ingest takes the rest (all of it once the senders stop)."""
LOCK_WAIT_S = 120.0
"""How long an ingest process waits for the other's write to the archive (one series: milliseconds)."""

_child_archive: Archive | None = None


def _child_init() -> None:
    """In the ingest process: die with the listener (a killed listener leaves no ingest running), leave
    Ctrl-C to the listener, and take a lower priority (:data:`INGEST_NICE`)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the listener, which stops us
    try:
        os.nice(INGEST_NICE)
    except OSError:
        pass


def _child_start(archive_dir: str) -> None:
    """Start of an ingest process: die with the listener and open the archive now (the ingest code is
    imported with this module), so that the first study received does not wait for them (about 0.5 s)."""
    global _child_archive
    _child_init()
    from ..io.dicom import read_dicom  # noqa: F401  (preloads pydicom here, not when the first study arrives)
    _child_archive = Archive(archive_dir, lock_wait_s=LOCK_WAIT_S)


def _child_ingest(archive_dir: str, folders: list[str]) -> IngestReport:
    """:func:`medhash.ingest.ingest` in the ingest process (the archive stays open between calls)."""
    global _child_archive
    if _child_archive is None:
        _child_archive = Archive(archive_dir, lock_wait_s=LOCK_WAIT_S)
    return ingest(_child_archive, folders)


class IngestProcesses:
    """:data:`INGEST_PROCESSES` spawned processes that ingest study folders into ``archive_dir``.

    Parameters
    ----------
    archive : the archive open in the listener's process (where a process cannot be used).
    archive_dir : its folder, opened again in each process.
    """

    def __init__(self, archive: Archive, archive_dir: Path) -> None:
        self.archive = archive
        self.archive_dir = Path(archive_dir)
        self._pool: ProcessPoolExecutor | None = None
        self._inproc = threading.Lock()  # ingests in this process (no ingest process) take turns

    def start(self) -> int:
        """Start the processes and wait until they are up (not at the first study); returns how many
        studies can be ingested at once (1 when no process could be started)."""
        try:
            self._pool = ProcessPoolExecutor(INGEST_PROCESSES, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_child_start, initargs=(str(self.archive_dir),))
            wait([self._pool.submit(int) for _ in range(INGEST_PROCESSES)])
        except Exception as exc:  # pragma: no cover - then in this process
            log.debug("no ingest process (%s); ingesting in the listener process", exc)
            self._pool = None
        return INGEST_PROCESSES if self._pool is not None else 1

    def run(self, folders: list[Path]) -> IngestReport:
        """Ingest ``folders`` together: in a process, else (none, or it died) in this one."""
        pool = self._pool
        if pool is not None:
            try:
                return pool.submit(_child_ingest, str(self.archive_dir), [str(f) for f in folders]).result()
            except BrokenProcessPool:
                log.warning("an ingest process died; ingesting in the listener process from now on")
                self._pool = None
        with self._inproc:
            return ingest(self.archive, folders)

    def shutdown(self) -> None:
        """Stop the processes (after what they are ingesting)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
