"""The listener: a DICOM storage SCP that feeds the archive, what ``medhash listen`` runs.

Flow of one file::

    C-STORE ──▶ ARCHIVE/spool/<association>.<n>/<SOPInstanceUID>.dcm   (tmp, rename, fsync; then 0x0000)
                       │  one spool folder per study (StudyInstanceUID, else FrameOfReferenceUID) of an
                       │  association; the study is *closed* when the association has moved on to other
                       │  studies for CLOSE_AFTER_FILES files, or when the association ends
                       ▼
               ingest processes (INGEST_PROCESSES studies at a time, never two of one study, while
               receiving goes on; their archive writes take turns):
               medhash.ingest.ingest(archive, [closed study folders])  (the code path of `medhash ingest`)
                       │
                       ├─▶ series in the archive; the spool folder is deleted
                       └─▶ files that could not be ingested: ARCHIVE/spool/failed/<association>.<n>/ + problems.txt

When a study is ingested:

* closed because the association moved on (the sender sends study after study): at once, while the
  association goes on sending the next studies;
* still open when its association ended (released or aborted): once ``quiet_s`` seconds passed with
  no new file, so that a sender using one association per series (CT, then RTDOSE, then RTSTRUCT)
  still has them ingested together;
* never while another association has the same study open (its files would miss their CT); the
  folders of one study waiting together are ingested together. CT, RTDOSE and RTSTRUCT of a study
  sent in one association are therefore always in the same ingest.

Receiving costs per file: pynetdicom's handling of the C-STORE (about 2.5 ms here), the file meta
written by hand (:func:`~medhash.net.dicom_tuning.file_meta_bytes`), the study read by walking the
header's element headers (:func:`~medhash.net.spool.read_study_key`, 20 microseconds) and the durable
write (about 1 ms, one fsync on ext4, XFS and btrfs: :func:`~medhash.net.spool.write_atomic`). The
network thread of each association is told to poll every
:data:`~medhash.net.dicom_tuning.DUL_LOOP_DELAY_S` instead of pynetdicom's 1 ms. The ingest processes
run at a lower priority (:data:`~medhash.net.workers.INGEST_NICE`): acknowledging a file waits on the
CPU, ingest can wait.

A file is acknowledged (status 0x0000) only once it is on disk, so a listener killed at any moment
loses nothing it acknowledged: whatever is left in the spool is ingested after the next start, once
the quiet period has passed without a new file, so that a study the kill cut short is completed by
the sender's resend (received meanwhile and ingested with it); a folder is deleted only after its
ingest has committed. A resend that comes later still completes the study: the archive completes a
series from a later ingest that holds all its instances (:mod:`medhash.store.series`).
Accepted SOP classes: CT Image Storage, RT Dose, RT Structure Set, RT Plan (plans are accepted so a
planning system's export does not fail, but the archive stores no plans) and Verification (C-ECHO).
Other SOP classes get no presentation context (the sender reports them as not sent).
Transfer syntaxes: the uncompressed ones first, then the compressed ones medhash decodes
(:data:`medhash.io.dicom.COMPRESSED_SYNTAXES`: JPEG lossless, JPEG 2000, JPEG-LS, RLE, lossy JPEG), so
a sender that offers both sends uncompressed, and a PACS that cannot transcode sends what it stored.
Files are spooled as they were received (no transcoding); ingest decodes them.
With a pseudonymisation key, every data set is pseudonymised before it is written to the spool, so
original identifiers never reach the archive folder.

This module holds the listener's state: associations, their study folders, when a study is handed to
ingest. The spool folder is :mod:`.spool`, the ingest processes :mod:`.workers`, the changes to
pynetdicom :mod:`.dicom_tuning`.
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import shutil
import signal
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from ..errors import AddressInUseError, ArchiveError, MedhashError
from ..ingest.pseudonymise import as_pseudonymiser
from ..io.dicom import RECEIVED_SOP_CLASSES, RECEIVED_SYNTAXES
from ..store import Archive
from ..store.durable import file_lock
from ..store.layout import CATALOG, catalog_path, spool_dir
from .dicom_tuning import file_meta_bytes, tune_connection
from .spool import (FAILED, LOCK, folder_study_key, left_behind, make_folder, read_study_key, rename_durable_with_file, safe_name,
                    set_aside, write_atomic)
from .workers import IngestProcesses

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
ACCEPTED_SOP_CLASSES = RECEIVED_SOP_CLASSES
"""SOP Class UID -> short name of the storage SOP classes the listener accepts."""
TRANSFER_SYNTAXES = RECEIVED_SYNTAXES
"""Transfer syntaxes accepted for them, in order of preference: uncompressed first."""

STATUS_SUCCESS = 0x0000
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000

CLOSE_AFTER_FILES = 16
"""A study of an association is closed (and ingested) once the association has sent this many files of
other studies since the study's last file."""

_counter = itertools.count(1)


@dataclass
class _Assoc:
    """One association: what it received, its open study folders, what its ingests gave."""

    id: str
    calling_ae: str
    peer: str
    files: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    open: dict[str, "_Group"] = field(default_factory=dict)   # study key -> its open group
    groups: int = 0            # groups made so far (folder numbering)
    pending: int = 0           # groups closed or open, not yet ingested
    ended: bool = False
    series: int = 0
    slices: int = 0
    existing: int = 0
    problems: int = 0
    failed: set[str] = field(default_factory=set)

    def summary(self, failed_dir: Path) -> str:
        """The association's one log line, once it has ended and all its studies are ingested."""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items()))
        head = (f"association {self.id} from {self.calling_ae}" + (f" ({self.peer})" if self.peer else "")
                + f": {self.files} file(s) received" + (f" ({kinds})" if kinds else ""))
        if self.files:
            head += f", {self.series} series ingested ({self.slices} slices)"
            if self.existing:
                head += f", {self.existing} already in the archive"
        head += f", {len(self.errors) + self.problems} error(s)"
        if self.failed:
            head += f" (files set aside in {failed_dir}/: {', '.join(sorted(self.failed))})"
        return head


@dataclass(eq=False)
class _Group:
    """The spool folder of one study received on one association."""

    assoc: _Assoc
    key: str
    folder: Path
    files: int = 0
    last: int = 0              # the association's file count at this group's last file
    quiet: bool = False        # closed by the association's end: wait for the quiet period


def _check_ae_title(title: str) -> str:
    title = str(title).strip()
    if not 1 <= len(title) <= 16 or not title.isascii() or "\\" in title or not title.isprintable():
        raise MedhashError(f"AE title {title!r}: must be 1 to 16 printable ASCII characters without a backslash")
    return title


class Listener:
    """A DICOM storage SCP that spools received files into the archive and ingests them.

    Parameters
    ----------
    archive_dir : the archive; created when the folder is missing or empty.
    ae_title : this listener's AE title (1-16 characters).
    host, port : where to listen; port 0 picks a free port (see :attr:`port` after :meth:`start`).
    allow_ae : calling AE titles accepted; None or empty: any.
    pseudonymise : None, or a key file path, a key (bytes) or a Pseudonymiser: data sets are
        pseudonymised before they are spooled.
    quiet_s : seconds without a new file before the studies still open when their association ended
        are ingested (so that series sent over several associations are ingested together); studies
        an association has moved on from are ingested at once (see the module docstring).

    Examples
    --------
    >>> with Listener("./archive", port=11112) as listener:   # doctest: +SKIP
    ...     listener.serve_forever()                          # Ctrl-C: ingests what is spooled, stops
    """

    def __init__(self, archive_dir: str | os.PathLike[str], ae_title: str = "MEDHASH", host: str = "127.0.0.1",
                 port: int = 11112, allow_ae=None, pseudonymise=None, quiet_s: float = 5.0) -> None:
        self.archive_dir = Path(archive_dir)
        self.ae_title = _check_ae_title(ae_title)
        self.host = host
        if not 0 <= int(port) <= 65535:
            raise MedhashError(f"port {port}: must be 0 to 65535")
        self._port = int(port)
        self.allow_ae = [_check_ae_title(a) for a in (allow_ae or [])]
        if quiet_s < 0:
            raise MedhashError(f"quiet period {quiet_s}: must be 0 or more seconds")
        self.quiet_s = float(quiet_s)
        self.pseudonymiser = None
        if pseudonymise is not None:
            self.pseudonymiser = as_pseudonymiser(pseudonymise)  # a bad key fails here, before listening
        self.archive: Archive | None = None
        self.spool = spool_dir(self.archive_dir)
        self._server = None
        self._rename_durable = False
        self._lock = ExitStack()            # the spool's lock, held from start to stop
        self._cond = threading.Condition()
        self._assocs: dict[object, _Assoc] = {}
        self._ready: list[_Group] = []
        self._retry_at = 0.0
        self._last_activity = time.monotonic()
        self._stopping = False
        self._workers: list[threading.Thread] = []
        self._processes: IngestProcesses | None = None
        self._in_flight: set[str] = set()   # study keys being ingested
        self._stopped = threading.Event()
        self.stats = {"associations": 0, "files": 0, "series_ingested": 0, "slices_ingested": 0, "errors": 0}

    # ------------------------------------------------------------------ life cycle
    @property
    def port(self) -> int:
        """The TCP port listened on (the one chosen by the system when 0 was asked)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    def __enter__(self) -> "Listener":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _open_archive(self) -> Archive:
        path = self.archive_dir
        if path.exists() and not path.is_dir():
            raise ArchiveError(f"{path}: exists and is not a directory")
        if not path.exists() and not path.parent.is_dir():
            raise ArchiveError(f"{path}: archive missing and its parent folder {path.parent} does not exist")
        if path.is_dir() and not catalog_path(path).is_file() and any(path.iterdir()):
            raise ArchiveError(f"{path}: not a medhash archive (no {CATALOG}) and not empty; give an archive "
                               "folder, or a new or empty folder to create one")
        return Archive(path, create=True)

    def start(self) -> "Listener":
        """Open the archive, take the spool, ingest what an earlier run left, and listen."""
        self.archive = self._open_archive()
        try:
            self.spool.mkdir(exist_ok=True)
            self._lock.enter_context(file_lock(self.spool / LOCK, wait_s=0, busy=(
                f"{self.archive_dir}: another `medhash listen` is receiving into this archive")))
            self._rename_durable = rename_durable_with_file(self.spool)
            self._recover()
            self._start_workers()  # the ingest processes are up before the first association
            self._start_server()
        except BaseException:
            self._shutdown_worker()
            self._release()
            raise
        log.info("listening as %s on %s:%d%s%s; spool %s, ingest after %g s quiet", self.ae_title, self.host,
                 self.port, f", calling AE titles {', '.join(self.allow_ae)} only" if self.allow_ae else "",
                 ", pseudonymising" if self.pseudonymiser else "", self.spool, self.quiet_s)
        return self

    def _start_server(self) -> None:
        """The storage SCP: the accepted SOP classes and transfer syntaxes, and the event handlers."""
        # optional dependency: pynetdicom only where DICOM is received
        from pynetdicom import AE, evt

        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = 0
        if self.allow_ae:
            ae.require_calling_aet = list(self.allow_ae)
        for uid in ACCEPTED_SOP_CLASSES:
            ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(VERIFICATION)
        handlers = [(evt.EVT_CONN_OPEN, tune_connection), (evt.EVT_C_STORE, self._on_store),
                    (evt.EVT_C_ECHO, lambda event: STATUS_SUCCESS),
                    (evt.EVT_ACCEPTED, self._on_accepted), (evt.EVT_REJECTED, self._on_rejected),
                    (evt.EVT_RELEASED, self._on_end), (evt.EVT_ABORTED, self._on_end),
                    (evt.EVT_CONN_CLOSE, self._on_end)]
        try:
            self._server = ae.start_server((self.host, self._port), block=False, evt_handlers=handlers)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUseError(f"cannot listen on {self.host}:{self._port}: the port is in use (another "
                                        "listener or program); choose another port", param="port") from None
            raise MedhashError(f"cannot listen on {self.host}:{self._port}: {exc.strerror or exc}") from None

    def _recover(self) -> None:
        """Queue the spool folders an earlier (killed) run left, each under its study, to be ingested once
        the quiet period has passed (from this start on) with no new file of it: a study the killed run
        received only in part is then completed by the sender's resend, received meanwhile and ingested
        together with it. Half-written files (never acknowledged) are dropped."""
        earlier = _Assoc("(earlier run)", "(earlier run)", "", ended=True)
        folders, cut_short = left_behind(self.spool)
        left = [_Group(earlier, folder_study_key(folder), folder, files=files, quiet=True) for folder, files in folders]
        if cut_short:
            log.warning("spool: %d file(s) left cut short by an earlier run (not acknowledged, so the sender "
                        "sends them again) set aside in %s", cut_short, self.spool / FAILED)
        if left:
            earlier.files = sum(g.files for g in left)
            earlier.pending = len(left)
            log.info("spool: %d folder(s) with %d file(s) left by an earlier run; ingested after %g s without a "
                     "new file (the quiet period), together with what the sender sends again of their studies meanwhile",
                     len(left), earlier.files, self.quiet_s)
            with self._cond:
                self._ready += left
                self._last_activity = time.monotonic()

    def stop(self) -> None:
        """Stop listening, end open associations, ingest everything spooled, release the archive."""
        if self._server is not None:
            server, self._server = self._server, None
            for assoc in list(server.active_associations):
                assoc.abort()
            for assoc in list(server.active_associations):
                assoc.join(timeout=10)
            server.shutdown()
            with self._cond:
                for key in list(self._assocs):
                    self._end(key)
        self._shutdown_worker()
        self._release()
        self._stopped.set()

    def _shutdown_worker(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join()
        self._workers = []
        if self._processes is not None:
            self._processes.shutdown()
            self._processes = None

    def _release(self) -> None:
        if self.archive is not None:
            self.archive.close()
            self.archive = None
        self._lock.close()

    def serve_forever(self, ready=None) -> None:
        """Listen until Ctrl-C or SIGTERM (or :meth:`stop` from another thread), then stop cleanly.

        ``ready``: called once the signal handlers are in place (``medhash listen`` prints its start
        line there), so that a SIGTERM as soon as that line is seen still stops cleanly."""
        if self._server is None:
            self.start()
        previous = None
        if threading.current_thread() is threading.main_thread():
            def _term(signum, frame):
                raise KeyboardInterrupt
            previous = signal.signal(signal.SIGTERM, _term)
        try:
            if ready is not None:
                ready()
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            log.info("stopping: ingesting what is spooled")
        finally:
            self.stop()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    # ------------------------------------------------------------------ events (association threads)
    def _on_accepted(self, event) -> None:
        req = event.assoc.requestor
        aid = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{next(_counter)}"
        with self._cond:
            self._assocs[event.assoc] = _Assoc(aid, str(req.ae_title).strip(), f"{req.address}:{req.port}")
            self.stats["associations"] += 1
            self._last_activity = time.monotonic()

    def _on_rejected(self, event) -> None:
        req = event.assoc.requestor
        log.warning("association from %s (%s:%s) refused: calling AE title not recognised (allowed: %s)",
                    str(req.ae_title).strip() or "?", req.address, req.port, ", ".join(self.allow_ae) or "any")

    def _encoded(self, event, sop_class: str) -> tuple[tuple[bytes, ...], str, str]:
        """(the file's bytes in pieces, its SOP instance UID, its study key) of a C-STORE's data set."""
        if self.pseudonymiser is None:
            # the bytes as received behind a file meta; only the header up to the study is parsed
            name = str(event.request.AffectedSOPInstanceUID)
            syntax = str(event.context.transfer_syntax)
            raw = event.request.DataSet.getvalue()
            return (file_meta_bytes(sop_class, name, syntax), raw), name, read_study_key(raw, syntax)
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.pseudonymiser.dataset(ds)
        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        study = str(ds.get("StudyInstanceUID", "") or ds.get("FrameOfReferenceUID", "") or "")
        return (buf.getvalue(),), str(ds.SOPInstanceUID), study

    def _group(self, a: _Assoc, study: str) -> _Group:
        """The association's open folder of ``study``, made when it has none."""
        with self._cond:  # only this association's thread adds to or closes its open groups
            g = a.open.get(study)
            if g is None:
                a.groups += 1
                a.pending += 1
                g = a.open[study] = _Group(a, study, self.spool / f"{a.id}.{a.groups}")
        return g

    def _on_store(self, event) -> int:
        with self._cond:
            a = self._assocs.get(event.assoc)
        if a is None:  # cannot happen after EVT_ACCEPTED; refuse rather than lose track of the file
            return STATUS_OUT_OF_RESOURCES
        sop_class = str(event.request.AffectedSOPClassUID)
        kind = ACCEPTED_SOP_CLASSES.get(sop_class)
        if kind is None:
            a.errors.append(f"SOP class {sop_class} not supported")
            return STATUS_SOP_CLASS_NOT_SUPPORTED
        try:
            chunks, name, study = self._encoded(event, sop_class)
        except Exception as exc:
            a.errors.append(f"{event.request.AffectedSOPInstanceUID}: cannot decode ({type(exc).__name__}: {exc})")
            log.error("association %s: %s", a.id, a.errors[-1])
            return STATUS_CANNOT_UNDERSTAND
        g = self._group(a, study)
        try:
            make_folder(self.spool, g.folder)
            write_atomic(g.folder / f"{safe_name(name)}.dcm", *chunks, rename_durable_with_file=self._rename_durable)
        except OSError as exc:
            a.errors.append(f"{name}: cannot write to the spool ({exc})")
            log.error("association %s: %s", a.id, a.errors[-1])
            return STATUS_OUT_OF_RESOURCES
        with self._cond:
            a.files += 1
            a.kinds[kind] = a.kinds.get(kind, 0) + 1
            g.files += 1
            g.last = a.files
            self.stats["files"] += 1
            self._last_activity = time.monotonic()
            for key, other in list(a.open.items()):  # studies the association has moved on from
                if other is not g and a.files - other.last >= CLOSE_AFTER_FILES:
                    self._close(a, key, quiet=False)
        return STATUS_SUCCESS

    def _on_end(self, event) -> None:
        with self._cond:
            self._end(event.assoc)

    def _close(self, a: _Assoc, key: str, quiet: bool) -> None:
        """Hand an association's study folder to the ingest worker (caller holds the condition)."""
        g = a.open.pop(key)
        if g.files == 0:
            shutil.rmtree(g.folder, ignore_errors=True)
            a.pending -= 1
            return
        g.quiet = quiet
        self._ready.append(g)
        self._cond.notify_all()

    def _end(self, key) -> None:
        """An association ended: its open studies wait for the quiet period (caller holds the condition)."""
        a = self._assocs.pop(key, None)
        if a is None:
            return
        self._last_activity = time.monotonic()
        a.ended = True
        for study in list(a.open):
            self._close(a, study, quiet=True)
        if a.pending == 0:
            self._log_association(a)
        self._cond.notify_all()

    # ------------------------------------------------------------------ ingest worker
    def _pick(self) -> list[_Group]:
        """The groups to ingest now, or [] (caller holds the condition); their studies become in flight.

        A study being ingested is never picked again before that ingest ended, so the folders of one
        study are never ingested side by side.
        """
        ready = [g for g in self._ready if g.key not in self._in_flight]
        if not ready:
            return []
        if self._stopping:
            keys = {g.key for g in ready}
        else:
            now = time.monotonic()
            if now < self._retry_at:
                return []
            quiet_over = now - self._last_activity >= self.quiet_s
            busy = {k for a in self._assocs.values() for k in a.open}  # studies still being received
            keys = {g.key for g in ready if g.key not in busy and (quiet_over or not g.quiet)}
        batch = [g for g in self._ready if g.key in keys]
        self._ready = [g for g in self._ready if g.key not in keys]
        self._in_flight |= keys
        return batch

    def _start_workers(self) -> None:
        """Start the ingest processes (:mod:`.workers`) and one thread per process that hands it studies."""
        self._processes = IngestProcesses(self.archive, self.archive_dir)
        for k in range(self._processes.start()):
            worker = threading.Thread(target=self._work_loop, name=f"medhash-listen-ingest-{k}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _work_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    batch = self._pick()
                    if batch:
                        break
                    if self._stopping:
                        return
                    wait = None
                    if self._ready:
                        now = time.monotonic()
                        wait = max(0.05, self._retry_at - now, self.quiet_s - (now - self._last_activity))
                    self._cond.wait(wait)
            try:
                self._ingest(batch)
            except Exception:  # keep listening whatever happens; the files stay in the spool
                log.exception("ingest of the spool failed; the files stay in %s", self.spool)
            finally:
                with self._cond:
                    self._in_flight -= {g.key for g in batch}
                    self._cond.notify_all()

    def _ingest(self, batch: list[_Group]) -> None:
        folders = [g.folder for g in batch if g.folder.is_dir()]
        try:
            report = self._processes.run(folders)
        except ArchiveError as exc:
            retry = max(self.quiet_s, 2.0)
            log.warning("cannot ingest the spool now (%s); trying again in %g s", exc, retry)
            with self._cond:
                self._ready = batch + self._ready
                self._retry_at = time.monotonic() + retry
                if self._stopping:  # do not spin at stop: the next start ingests them
                    self._ready = []
            return
        problems = [p for p in report.problems if p.level == "error" or "not ingested" in p.message]
        failed = self._set_aside(problems, batch)
        for g in batch:
            shutil.rmtree(g.folder, ignore_errors=True)
        for p in report.problems:
            if p not in problems and p.level == "warning":
                log.debug("ingest warning: %s: %s", p.path, p.message)
        log.debug("ingested %d study folder(s) (%s): %d series (%d slices)", len(batch),
                  ", ".join(g.folder.name for g in batch), report.series_added, report.slices_added)
        with self._cond:
            self.stats["series_ingested"] += report.series_added
            self.stats["slices_ingested"] += report.slices_added
            self.stats["errors"] += len(failed)
            self._account(batch, report, problems)

    def _account(self, batch: list[_Group], report, problems) -> None:
        """Count an ingest's outcome for the associations of its batch (caller holds the condition)."""
        # series and slices are counted for the first association of the batch that ended up
        # with them; with one association per batch (the usual case) they are exact
        shares = {}
        for g in batch:
            shares.setdefault(id(g.assoc), g.assoc)
        first = True
        for a in shares.values():
            mine = [p for p in problems if any(p.path.startswith(str(g.folder) + os.sep) for g in batch if g.assoc is a)]
            a.problems += len(mine)
            a.failed |= {g.folder.name for g in batch if g.assoc is a and any(
                p.path.startswith(str(g.folder) + os.sep) for p in mine)}
            if first:
                a.series += report.series_added
                a.slices += report.slices_added
                a.existing += report.series_existing
                first = False
            a.pending -= sum(1 for g in batch if g.assoc is a)
            if a.ended and a.pending == 0:
                self._log_association(a)

    def _set_aside(self, problems, batch: list[_Group]) -> list[str]:
        """Move the files named by ingest problems to spool/failed/<association>.<n>/, with problems.txt."""
        moved = []
        folders = {str(g.folder) for g in batch}
        for p in problems:
            path = Path(p.path)
            log.error("%s: %s", p.path, p.message)
            if str(path.parent) in folders and path.is_file():
                moved.append(str(set_aside(self.spool, path, p.message)))
        return moved

    def _log_association(self, a: _Assoc) -> None:
        """The association's one log line, once it has ended and all its studies are ingested."""
        self.stats["errors"] += len(a.errors)
        (log.warning if a.errors or a.problems else log.info)(a.summary(self.spool / FAILED))
