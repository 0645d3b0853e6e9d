"""``medhash pull``: fetch a patient's or a study's DICOM from a PACS and ingest it.

Two ways in, both ending in :func:`medhash.ingest.pipeline.ingest` of a temporary folder (deleted afterwards):

* DIMSE (:func:`pull_dimse`): C-FIND at STUDY level (by PatientID or StudyInstanceUID), then per
  study a C-MOVE to a storage SCP that medhash starts for the duration of the pull (AE title
  ``aet``, port ``move_port``; the PACS must know that AE title with this host and port), or a
  C-GET on the same association (``method="get"``: nothing to configure on the PACS). With
  ``method="auto"`` (the default) a C-MOVE that the PACS refuses outright (for instance "move
  destination unknown") is retried as a C-GET.
* DICOMweb (:func:`pull_dicomweb`): QIDO-RS ``GET {url}/studies?PatientID=...``, then per series a
  WADO-RS ``GET {url}/studies/{study}/series/{series}`` (``multipart/related;
  type="application/dicom"; transfer-syntax=*``: the files as the server stored them, compressed or
  not), with the standard library only.

Compressed transfer syntaxes (:data:`medhash.io.dicom.COMPRESSED_SYNTAXES`) are accepted on every path
beside the uncompressed ones, so a PACS that stores JPEG lossless, JPEG 2000, JPEG-LS or RLE and cannot
transcode still delivers; the files are ingested as received.

What arrived is ingested, what failed is listed in :attr:`PullReport.failed` with the reason.
Network problems before anything could be asked (PACS unreachable, association rejected, HTTP
errors of the query) raise :class:`~medhash.errors.MedhashError` with a message for people.
"""
from __future__ import annotations

import base64
import json
import logging
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MedhashError
from ..ingest.pipeline import EXIT_NO_INPUT, EXIT_OK, EXIT_PARTIAL, IngestReport, ingest
from ..io.dicom import COMPRESSED_SYNTAXES, RECEIVED_SOP_CLASSES, RECEIVED_SYNTAXES, UNCOMPRESSED_SYNTAXES
from .listen import tune_connection

log = logging.getLogger(__name__)

DEFAULT_AET = "MEDHASH"
"""medhash's own AE title (calling AE title, and the move destination's)."""
DEFAULT_MOVE_PORT = 11113
"""Port of the temporary storage SCP that receives C-MOVE results (declare it on the PACS)."""
METHODS = ("auto", "move", "get")


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


def _open_archive(archive):
    from ..store.archive import Archive
    return archive if isinstance(archive, Archive) else Archive(archive, create=True)


def _finish(archive, report: PullReport, folder: Path, progress: bool, pseudonymise) -> PullReport:
    if report.files_received:
        report.ingest = ingest(_open_archive(archive), [folder], format="dicom", progress=progress,
                               pseudonymise=pseudonymise)
    return report


def _bar(total, desc, progress):
    from tqdm import tqdm
    return tqdm(total=total or None, desc=desc, unit="file", disable=not progress, leave=False)


def _check_query(patient, study) -> None:
    if (patient is None) == (study is None):
        raise MedhashError("give a patient id or a study instance UID (one of them)")
    value = patient if patient is not None else study
    if not value.strip() or any(c in value for c in "*?\\"):
        # a wildcard (or an empty value, which matches everything) could pull a whole PACS
        raise MedhashError(f"{'patient id' if patient is not None else 'study UID'} must be one exact value, "
                           f"without wildcards (* ?) or backslashes: {value!r}")


# ----------------------------------------------------------------------------------------- DIMSE
def _status_text(status) -> str:
    from pynetdicom.status import code_to_category
    code = int(getattr(status, "Status", 0xFFFF))
    msg = f"status 0x{code:04X} ({code_to_category(code)})"
    comment = getattr(status, "ErrorComment", None)
    return f"{msg}: {comment}" if comment else msg


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
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
"""WADO-RS: any transfer syntax, so the server may send what it stored (the default is explicit VR little
endian, which makes the server transcode or fail)."""
WADO_ACCEPT_PLAIN = 'multipart/related; type="application/dicom"'


def _reachable(host: str, port: int, timeout: float) -> None:
    """Raise a clear error when nothing accepts TCP connections at host:port (pynetdicom only says 'aborted')."""
    try:
        socket.create_connection((host, port), timeout=min(timeout, 10)).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise MedhashError(f"cannot reach the PACS at {host}:{port}: {reason} (is the host and port right, and "
                           "is the PACS running and reachable from here?)") from None


def _associate(ae, host: str, port: int, aec: str, what: str):
    _reachable(host, port, ae.acse_timeout or 30)
    try:
        assoc = ae.associate(host, port, ae_title=aec)
    except OSError as exc:  # pragma: no cover - pynetdicom reports most failures through assoc
        raise MedhashError(f"cannot reach the PACS at {host}:{port}: {exc}") from None
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        raise MedhashError(f"the PACS at {host}:{port} rejected the association ({what}, called AE title "
                           f"{aec!r}, calling AE title {ae.ae_title!r}): check both AE titles and that the PACS "
                           "accepts this calling AE")
    if assoc.is_aborted:
        raise MedhashError(f"the PACS at {host}:{port} aborted the association ({what}, called AE title {aec!r})")
    raise MedhashError(f"cannot reach the PACS at {host}:{port} ({what}): no DICOM service answered "
                       "(is the host and port right, and is the PACS running?)")


def find_studies(host: str, port: int, aec: str, aet: str = DEFAULT_AET, patient: str | None = None,
                 study: str | None = None, timeout: float = 30) -> list[dict]:
    """C-FIND (Study Root, STUDY level) → ``[{"study": uid, "patient": id, "instances": n | None}]``."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    _check_query(patient, study)
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
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
    from pydicom.dataset import Dataset
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


def pull_dimse(archive, host: str, port: int, aec: str, aet: str = DEFAULT_AET, patient: str | None = None,
               study: str | None = None, move_port: int | None = None, progress: bool = True,
               pseudonymise=None, method: str = "auto", bind_address: str = "", timeout: float = 60
               ) -> PullReport:
    """Pull by DIMSE: C-FIND the studies, C-MOVE (or C-GET) each into a temporary folder, ingest it.

    Parameters
    ----------
    archive : an open :class:`~medhash.store.archive.Archive` or its directory (created if missing).
    host, port, aec : the PACS (its AE title).
    aet : medhash's AE title: the calling AE title, and the C-MOVE destination, which the PACS must
        know with this machine's address and ``move_port``.
    patient, study : a PatientID or a StudyInstanceUID (exactly one).
    move_port : port of the temporary storage SCP for C-MOVE (default :data:`DEFAULT_MOVE_PORT`).
    method : ``"move"``, ``"get"`` (C-GET: nothing to configure on the PACS) or ``"auto"`` (C-MOVE,
        and C-GET where the PACS refuses the C-MOVE of a study before sending anything).
    bind_address : interface of the temporary SCP (default: all, so a remote PACS can connect).
    pseudonymise : passed to :func:`~medhash.ingest.pipeline.ingest`.

    Returns
    -------
    PullReport
    """
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

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
    with tempfile.TemporaryDirectory(prefix="medhash-pull-") as tmp, _bar(total, "receiving", progress) as bar:
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
        if pending:  # C-GET: asked for, or the fallback of refused C-MOVEs
            ae = AE(ae_title=aet)
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
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
                for uid in pending:
                    report.failed.append({"what": f"study {uid}", "reason": "C-GET: the PACS did not accept "
                                          "the association"})
            else:
                used.append("get")
                try:
                    for uid in pending:
                        st = _retrieve_one(assoc, uid, "get", aet, StudyRootQueryRetrieveInformationModelGet)
                        _record(report, uid, st, "C-GET")
                finally:
                    assoc.release()
        report.failed.extend(counter["failed"])
        report.files_received = counter["n"]
        report.method = "+".join(used) or method
        return _finish(archive, report, folder, progress, pseudonymise)


def _record(report: PullReport, uid: str, status, what: str) -> None:
    if status is None:
        report.failed.append({"what": f"study {uid}", "reason": f"{what}: no answer (connection lost or timed out)"})
    elif status.Status != 0x0000:
        failed = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
        extra = f", {failed} instance(s) failed" if failed else ""
        report.failed.append({"what": f"study {uid}", "reason": f"{what}: {_status_text(status)}{extra}"})


def _move_studies(report, studies, host, port, aec, aet, move_port, bind_address, handlers, counter, timeout,
                  refused_ok: bool) -> list[str]:
    """C-MOVE each study to a temporary storage SCP; returns the studies to try by C-GET instead."""
    from pynetdicom import AE, StoragePresentationContexts
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

    scp_ae = AE(ae_title=aet)
    scp_ae.network_timeout = scp_ae.dimse_timeout = timeout
    for uid in dict.fromkeys([c.abstract_syntax for c in StoragePresentationContexts] + list(STORAGE_CLASSES)):
        scp_ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
    try:
        server = scp_ae.start_server((bind_address, move_port), block=False, evt_handlers=handlers)
    except OSError as exc:
        raise MedhashError(f"cannot listen on port {move_port} for the C-MOVE results ({exc}): choose another "
                           "--move-port (and declare it on the PACS), or use --get") from None
    retry: list[str] = []
    try:
        ae = AE(ae_title=aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
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


# -------------------------------------------------------------------------------------- DICOMweb
def _http(url: str, accept: str, timeout: float, headers: dict | None = None):
    req = urllib.request.Request(url, headers={"Accept": accept, **(headers or {})})
    return urllib.request.urlopen(req, timeout=timeout)


def dicomweb_headers(user: str | None = None, password: str | None = None, token: str | None = None) -> dict:
    """HTTP headers that authenticate to a DICOMweb server: basic (``user`` and ``password``) or bearer
    (``token``), or none. The credentials go only into the ``Authorization`` header, never into a log."""
    if token is not None and user is not None:
        raise MedhashError("give a DICOMweb user or a token, not both")
    if token is not None:
        token = token.strip()
        if not token or any(c in token for c in "\r\n"):
            raise MedhashError("the DICOMweb token is empty or spans several lines")
        return {"Authorization": f"Bearer {token}"}
    if user is not None:
        if password is None:
            raise MedhashError(f"no password for DICOMweb user {user!r}")
        raw = f"{user}:{password}".encode("utf-8")
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
    return {}


def _qido(url: str, timeout: float, headers: dict | None) -> list[dict]:
    try:
        with _http(url, "application/dicom+json", timeout, headers) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            given = "the credentials given were refused" if headers and "Authorization" in headers else \
                "it needs credentials: give --dicomweb-user USER (password in $MEDHASH_DICOMWEB_PASSWORD) or " \
                "--dicomweb-token-file FILE"
            raise MedhashError(f"the DICOMweb server refused QIDO-RS {url} (HTTP {exc.code} {exc.reason}): "
                               f"{given}") from None
        raise MedhashError(f"QIDO-RS {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MedhashError(f"cannot reach the DICOMweb server at {url}: {reason}") from None
    if not body.strip():
        return []  # 204 No Content: nothing matched
    try:
        return json.loads(body)
    except ValueError:
        raise MedhashError(f"QIDO-RS {url} did not answer DICOM JSON (is the URL the DICOMweb root?)") from None


def _value(item: dict, tag: str):
    v = (item.get(tag) or {}).get("Value") or [None]
    return v[0]


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The parts of a ``multipart/related`` body (their content, headers stripped)."""
    boundary = None
    for param in content_type.split(";")[1:]:
        key, _, val = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = val.strip().strip('"')
    if not boundary:
        raise MedhashError(f"WADO-RS answer is not multipart (Content-Type {content_type!r})")
    parts = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        _, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        parts.append(content[:-2] if content.endswith(b"\r\n") else content)
    return parts


def pull_dicomweb(archive, url: str, patient: str | None = None, study: str | None = None,
                  progress: bool = True, pseudonymise=None, timeout: float = 120,
                  headers: dict | None = None) -> PullReport:
    """Pull by DICOMweb: QIDO-RS the studies and their series, WADO-RS each series, ingest what arrived.

    Parameters
    ----------
    archive : an open :class:`~medhash.store.archive.Archive` or its directory (created if missing).
    url : the DICOMweb root, e.g. ``http://pacs:8042/dicom-web``.
    patient, study : a PatientID or a StudyInstanceUID (exactly one).
    headers : extra HTTP headers (e.g. ``{"Authorization": "Bearer ..."}``).
    pseudonymise : passed to :func:`~medhash.ingest.pipeline.ingest`.
    """
    _check_query(patient, study)
    root = url.rstrip("/")
    report = PullReport(source=root, method="dicomweb")
    query = {"PatientID": patient} if patient is not None else {"StudyInstanceUID": study}
    query["includefield"] = "00201208"
    found = _qido(f"{root}/studies?{urllib.parse.urlencode(query)}", timeout, headers)
    report.studies = [u for u in (_value(s, "0020000D") for s in found) if u]
    if not report.studies:
        return report
    total = sum(int(_value(s, "00201208") or 0) for s in found)
    with tempfile.TemporaryDirectory(prefix="medhash-pull-") as tmp, _bar(total, "receiving", progress) as bar:
        folder = Path(tmp)
        n = 0
        for uid in report.studies:
            try:
                series = _qido(f"{root}/studies/{uid}/series", timeout, headers)
            except MedhashError as exc:
                report.failed.append({"what": f"study {uid}", "reason": str(exc)})
                continue
            for s in series:
                suid = _value(s, "0020000E")
                if not suid:
                    continue
                where = f"{root}/studies/{uid}/series/{suid}"
                try:
                    try:
                        with _http(where, WADO_ACCEPT, timeout, headers) as resp:
                            parts = split_multipart(resp.read(), resp.headers.get("Content-Type", ""))
                    except urllib.error.HTTPError as exc:
                        if exc.code not in (400, 406, 415):
                            raise
                        # a server that does not take transfer-syntax=*: ask as before (explicit VR little endian)
                        with _http(where, WADO_ACCEPT_PLAIN, timeout, headers) as resp:
                            parts = split_multipart(resp.read(), resp.headers.get("Content-Type", ""))
                except urllib.error.HTTPError as exc:
                    report.failed.append({"what": f"series {suid}", "reason": f"WADO-RS: HTTP {exc.code} {exc.reason}"})
                    continue
                except (urllib.error.URLError, OSError, MedhashError) as exc:
                    report.failed.append({"what": f"series {suid}", "reason": f"WADO-RS: {getattr(exc, 'reason', exc)}"})
                    continue
                for part in parts:
                    n += 1
                    (folder / f"{n:06d}.dcm").write_bytes(part)
                    bar.update(1)
        report.files_received = n
        return _finish(archive, report, folder, progress, pseudonymise)
