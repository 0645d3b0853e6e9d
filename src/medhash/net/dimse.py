"""``medhash pull`` by DIMSE (:func:`pull_dimse`): C-FIND the studies, then fetch each into a temporary
folder and ingest it.

C-FIND at STUDY level (by PatientID or StudyInstanceUID), then per study a C-MOVE to a storage SCP
that medhash starts for the duration of the pull (AE title ``aet``, port ``move_port``; the PACS must
know that AE title with this host and port), or a C-GET on the same association (``method="get"``:
nothing to configure on the PACS). With ``method="auto"`` (the default) a C-MOVE that the PACS refuses
outright (for instance "move destination unknown") is retried as a C-GET.

Compressed transfer syntaxes (:data:`medhash.io.dicom.COMPRESSED_SYNTAXES`) are accepted beside the
uncompressed ones, so a PACS that stores JPEG lossless, JPEG 2000, JPEG-LS or RLE and cannot transcode
still delivers; the files are ingested as received.
"""
from __future__ import annotations

import logging
import socket
import tempfile
import threading
from pathlib import Path

from pydicom.dataset import Dataset

from ..errors import MedhashError
from ..io.dicom import COMPRESSED_SYNTAXES, RECEIVED_SOP_CLASSES, RECEIVED_SYNTAXES, UNCOMPRESSED_SYNTAXES
from .dicom_tuning import tune_connection
from .pulling import PullReport, check_query, ingest_received, progress_bar

log = logging.getLogger(__name__)

DEFAULT_AET = "MEDHASH"
"""medhash's own AE title (calling AE title, and the move destination's)."""
DEFAULT_MOVE_PORT = 11113
"""Port of the temporary storage SCP that receives C-MOVE results (declare it on the PACS)."""
METHODS = ("auto", "move", "get")

STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",       # CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",     # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.481.2",   # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",   # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.5",   # RT Plan
    "1.2.840.10008.5.1.4.1.1.481.8",   # RT Ion Plan
    "1.2.840.10008.5.1.4.1.1.4",       # MR Image
    "1.2.840.10008.5.1.4.1.1.128",     # PET Image
    "1.2.840.10008.5.1.4.1.1.66.1",    # Spatial Registration
    "1.2.840.10008.5.1.4.1.1.66.3",    # Deformable Spatial Registration
    "1.2.840.10008.5.1.4.1.1.7",       # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.481.1",   # RT Image
)
"""Storage SOP classes asked for as SCP role in a C-GET (a C-GET association has room for few)."""
COMPRESSED_CLASSES = tuple(RECEIVED_SOP_CLASSES)
"""CT, RT Dose, RT Structure Set, RT Plan (what `medhash listen` accepts): in a C-GET, each of these is
also proposed once per compressed transfer syntax, in a presentation context of its own, so that the PACS
finds the syntax it stored and sends the file as it is (the PACS chooses one transfer syntax per context;
offered together, it could pick a lossy one for everything). With the uncompressed context of every
class and the C-GET model: 1 + 12 + 4 x 9 = 49 of the 128 contexts an association can have."""
TRANSFER_SYNTAXES = RECEIVED_SYNTAXES
"""What the temporary storage SCP of a C-MOVE accepts, uncompressed first (as `medhash listen`)."""


def _status_text(status) -> str:
    # optional dependency: pynetdicom only where DICOM is pulled
    from pynetdicom.status import code_to_category
    code = int(getattr(status, "Status", 0xFFFF))
    msg = f"status 0x{code:04X} ({code_to_category(code)})"
    comment = getattr(status, "ErrorComment", None)
    return f"{msg}: {comment}" if comment else msg


def _reachable(host: str, port: int, timeout: float) -> None:
    """Raise a clear error when nothing accepts TCP connections at host:port (pynetdicom only says 'aborted')."""
    try:
        socket.create_connection((host, port), timeout=min(timeout, 10)).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise MedhashError(f"cannot reach the PACS at {host}:{port}: {reason} (is the host and port right, and "
                           "is the PACS running and reachable from here?)") from None


def _new_ae(aet: str, timeout: float):
    """A pynetdicom AE with ``aet`` as its title and ``timeout`` for every wait."""
    # optional dependency: pynetdicom only where DICOM is pulled
    from pynetdicom import AE
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    return ae


def _associate(ae, host: str, port: int, aec: str, what: str):
    _reachable(host, port, ae.acse_timeout or 30)
    try:
        assoc = ae.associate(host, port, ae_title=aec)
    except OSError as exc:  # pragma: no cover - pynetdicom reports most failures through assoc
        raise MedhashError(f"cannot reach the PACS at {host}:{port}: {exc}") from None
    if assoc.is_established:
        return assoc
    if assoc.is_rejected or assoc.is_aborted:
        # a PACS refuses an unknown AE title by an A-ASSOCIATE-RJ or, depending on timing, an A-ABORT
        # (Orthanc does both): either way the request was refused, and the AE titles are what to check
        how = "rejected" if assoc.is_rejected else "aborted"
        raise MedhashError(f"the PACS at {host}:{port} refused the association ({what}, called AE title {aec!r}, "
                           f"calling AE title {ae.ae_title!r}; it {how} the request): check both AE titles and "
                           "that the PACS accepts this calling AE")
    raise MedhashError(f"cannot reach the PACS at {host}:{port} ({what}): no DICOM service answered "
                       "(is the host and port right, and is the PACS running?)")


def find_studies(host: str, port: int, aec: str, aet: str = DEFAULT_AET, patient: str | None = None,
                 study: str | None = None, timeout: float = 30) -> list[dict]:
    """C-FIND (Study Root, STUDY level) → ``[{"study": uid, "patient": id, "instances": n | None}]``."""
    # optional dependency: pynetdicom only where DICOM is pulled
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    check_query(patient, study)
    ae = _new_ae(aet, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientID = patient or ""
    q.StudyInstanceUID = study or ""
    q.NumberOfStudyRelatedInstances = ""
    assoc = _associate(ae, host, port, aec, "C-FIND")
    found: list[dict] = []
    try:
        for status, ident in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind):
            if not status:
                raise MedhashError(f"C-FIND to {aec}@{host}:{port} got no answer (connection lost or timed out)")
            if status.Status in (0xFF00, 0xFF01) and ident is not None:
                uid = str(ident.get("StudyInstanceUID", "") or "")
                if uid:
                    n = ident.get("NumberOfStudyRelatedInstances", None)
                    found.append({"study": uid, "patient": str(ident.get("PatientID", "") or ""),
                                  "instances": int(n) if n not in (None, "") else None})
            elif status.Status != 0x0000:
                raise MedhashError(f"C-FIND to {aec}@{host}:{port} failed: {_status_text(status)}")
    finally:
        assoc.release()
    return found


def _store_handler(folder: Path, bar, counter: dict, lock: threading.Lock):
    def handle(event):
        try:
            data = event.encoded_dataset()
            with lock:
                counter["seq"] = counter.get("seq", 0) + 1
                name = f"{counter['seq']:06d}.dcm"  # never a name sent by the peer (no path tricks)
            (folder / name).write_bytes(data)
        except Exception as exc:  # a bad instance is reported, the others go on
            with lock:
                counter["failed"].append({"what": "instance", "reason": f"could not be stored: {exc}"})
            return 0xA700
        with lock:
            counter["n"] += 1
            bar.update(1)
        return 0x0000
    return handle


def _retrieve_one(assoc, uid: str, method: str, aet: str, model):
    """Send one C-MOVE / C-GET for a study; returns its final status (None: no answer)."""
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = uid
    responses = assoc.send_c_move(q, aet, model) if method == "move" else assoc.send_c_get(q, model)
    last = None
    for status, _ in responses:
        if not status:
            return None
        last = status
    return last


def _record(report: PullReport, uid: str, status, what: str) -> None:
    if status is None:
        report.failed.append({"what": f"study {uid}", "reason": f"{what}: no answer (connection lost or timed out)"})
    elif status.Status != 0x0000:
        failed = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
        extra = f", {failed} instance(s) failed" if failed else ""
        report.failed.append({"what": f"study {uid}", "reason": f"{what}: {_status_text(status)}{extra}"})


def pull_dimse(archive, host: str, port: int, aec: str, aet: str = DEFAULT_AET, patient: str | None = None,
               study: str | None = None, move_port: int | None = None, progress: bool = True,
               pseudonymise=None, method: str = "auto", bind_address: str = "", timeout: float = 60
               ) -> PullReport:
    """Pull by DIMSE: C-FIND the studies, C-MOVE (or C-GET) each into a temporary folder, ingest it.

    Parameters
    ----------
    archive : an open :class:`~medhash.store.Archive` or its directory (created if missing).
    host, port, aec : the PACS (its AE title).
    aet : medhash's AE title: the calling AE title, and the C-MOVE destination, which the PACS must
        know with this machine's address and ``move_port``.
    patient, study : a PatientID or a StudyInstanceUID (exactly one).
    move_port : port of the temporary storage SCP for C-MOVE (default :data:`DEFAULT_MOVE_PORT`).
    method : ``"move"``, ``"get"`` (C-GET: nothing to configure on the PACS) or ``"auto"`` (C-MOVE,
        and C-GET where the PACS refuses the C-MOVE of a study before sending anything).
    bind_address : interface of the temporary SCP (default: all, so a remote PACS can connect).
    pseudonymise : passed to :func:`~medhash.ingest.ingest`.

    Returns
    -------
    PullReport
    """
    # optional dependency: pynetdicom only where DICOM is pulled
    from pynetdicom import evt

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    move_port = DEFAULT_MOVE_PORT if move_port is None else move_port
    report = PullReport(source=f"dimse://{aec}@{host}:{port}", method=method)
    studies = find_studies(host, port, aec, aet, patient=patient, study=study, timeout=timeout)
    report.studies = [s["study"] for s in studies]
    if not studies:
        return report
    total = sum(s["instances"] or 0 for s in studies)
    lock = threading.Lock()
    counter = {"n": 0, "failed": []}
    with tempfile.TemporaryDirectory(prefix="medhash-pull-") as tmp, progress_bar(total, progress) as bar:
        folder = Path(tmp)
        handlers = [(evt.EVT_CONN_OPEN, tune_connection),  # TCP_NODELAY, large reads, fast responses
                    (evt.EVT_C_STORE, _store_handler(folder, bar, counter, lock))]
        pending = list(report.studies)
        used = []
        if method in ("auto", "move"):
            pending = _move_studies(report, pending, host, port, aec, aet, move_port, bind_address, handlers,
                                    counter, timeout, refused_ok=(method == "auto"))
            if len(pending) < len(report.studies):
                used.append("move")
        if pending and _get_studies(report, pending, host, port, aec, aet, handlers, timeout):
            used.append("get")  # C-GET: asked for, or the fallback of refused C-MOVEs
        report.failed.extend(counter["failed"])
        report.files_received = counter["n"]
        report.method = "+".join(used) or method
        return ingest_received(archive, report, folder, progress, pseudonymise)


def _get_studies(report: PullReport, studies: list[str], host, port, aec, aet, handlers, timeout) -> bool:
    """C-GET each study on one association; False when the PACS did not accept the association (every
    study is then reported failed)."""
    # optional dependency: pynetdicom only where DICOM is pulled
    from pynetdicom import build_role
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # start-up: pynetdicom only when pulling

    ae = _new_ae(aet, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for uid in STORAGE_CLASSES:
        ae.add_requested_context(uid, list(UNCOMPRESSED_SYNTAXES))
        roles.append(build_role(uid, scp_role=True))
    for uid in COMPRESSED_CLASSES:
        for syntax in COMPRESSED_SYNTAXES:
            ae.add_requested_context(uid, syntax)
    try:
        assoc = ae.associate(host, port, ae_title=aec, ext_neg=roles, evt_handlers=handlers)
    except OSError as exc:  # pragma: no cover
        raise MedhashError(f"cannot reach the PACS at {host}:{port}: {exc}") from None
    if not assoc.is_established:
        for uid in studies:
            report.failed.append({"what": f"study {uid}", "reason": "C-GET: the PACS did not accept "
                                  "the association"})
        return False
    try:
        for uid in studies:
            st = _retrieve_one(assoc, uid, "get", aet, StudyRootQueryRetrieveInformationModelGet)
            _record(report, uid, st, "C-GET")
    finally:
        assoc.release()
    return True


def _move_studies(report, studies, host, port, aec, aet, move_port, bind_address, handlers, counter, timeout,
                  refused_ok: bool) -> list[str]:
    """C-MOVE each study to a temporary storage SCP; returns the studies to try by C-GET instead."""
    # optional dependency: pynetdicom only where DICOM is pulled
    from pynetdicom import AE, StoragePresentationContexts
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # start-up: pynetdicom only when pulling

    scp_ae = AE(ae_title=aet)
    scp_ae.network_timeout = scp_ae.dimse_timeout = timeout
    for uid in dict.fromkeys([c.abstract_syntax for c in StoragePresentationContexts] + list(STORAGE_CLASSES)):
        scp_ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
    try:
        server = scp_ae.start_server((bind_address, move_port), block=False, evt_handlers=handlers)
    except OSError as exc:
        raise MedhashError(f"cannot listen on port {move_port} for the C-MOVE results ({exc}): choose another "
                           "move port (and declare it on the PACS), or pull by C-GET", param="move_port") from None
    retry: list[str] = []
    try:
        ae = _new_ae(aet, timeout)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = _associate(ae, host, port, aec, "C-MOVE")
        try:
            for uid in studies:
                before = counter["n"]
                st = _retrieve_one(assoc, uid, "move", aet, StudyRootQueryRetrieveInformationModelMove)
                refused = st is not None and st.Status not in (0x0000, 0xB000) and counter["n"] == before
                if refused and refused_ok:
                    log.info("C-MOVE of study %s refused (%s); trying C-GET", uid, _status_text(st))
                    retry.append(uid)
                else:
                    _record(report, uid, st, "C-MOVE" + (f" to {aet} (the PACS must know AE title {aet!r} at "
                                                         f"this host, port {move_port})" if refused else ""))
        finally:
            assoc.release()
    finally:
        server.shutdown()
    return retry
