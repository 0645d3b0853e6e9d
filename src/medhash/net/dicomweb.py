"""``medhash pull`` by DICOMweb (:func:`pull_dicomweb`), with the standard library only.

QIDO-RS ``GET {url}/studies?PatientID=...``, then per series a WADO-RS
``GET {url}/studies/{study}/series/{series}`` (:data:`WADO_ACCEPT`: the files as the server stored them,
compressed or not; :data:`WADO_ACCEPT_PLAIN` again for a server that refuses that), into a temporary
folder that is ingested. :func:`dicomweb_headers` makes the ``Authorization`` header.
"""
from __future__ import annotations

import base64
import json
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import MedhashError
from .pulling import PullReport, check_query, ingest_received, progress_bar

WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
"""WADO-RS: any transfer syntax, so the server may send what it stored (the default is explicit VR little
endian, which makes the server transcode or fail)."""
WADO_ACCEPT_PLAIN = 'multipart/related; type="application/dicom"'
"""WADO-RS as asked before :data:`WADO_ACCEPT`: explicit VR little endian, for servers that refuse ``*``."""


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
                "it needs credentials: give a DICOMweb user and password, or a token"
            raise MedhashError(f"the DICOMweb server refused QIDO-RS {url} (HTTP {exc.code} {exc.reason}): "
                               f"{given}", param="headers") from None
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


def _wado_series(where: str, timeout: float, headers: dict | None) -> list[bytes]:
    """The files of one series (WADO-RS ``where``): as stored, else as explicit VR little endian."""
    try:
        with _http(where, WADO_ACCEPT, timeout, headers) as resp:
            return split_multipart(resp.read(), resp.headers.get("Content-Type", ""))
    except urllib.error.HTTPError as exc:
        if exc.code not in (400, 406, 415):
            raise
    # a server that does not take transfer-syntax=*: ask as before (explicit VR little endian)
    with _http(where, WADO_ACCEPT_PLAIN, timeout, headers) as resp:
        return split_multipart(resp.read(), resp.headers.get("Content-Type", ""))


def _fetch_study(root: str, uid: str, report: PullReport, folder: Path, bar, timeout: float,
                 headers: dict | None) -> None:
    """Every series of study ``uid`` into ``folder`` (numbered files); failures go into ``report``."""
    try:
        series = _qido(f"{root}/studies/{uid}/series", timeout, headers)
    except MedhashError as exc:
        report.failed.append({"what": f"study {uid}", "reason": str(exc)})
        return
    for s in series:
        suid = _value(s, "0020000E")
        if not suid:
            continue
        try:
            parts = _wado_series(f"{root}/studies/{uid}/series/{suid}", timeout, headers)
        except urllib.error.HTTPError as exc:
            report.failed.append({"what": f"series {suid}", "reason": f"WADO-RS: HTTP {exc.code} {exc.reason}"})
            continue
        except (urllib.error.URLError, OSError, MedhashError) as exc:
            report.failed.append({"what": f"series {suid}", "reason": f"WADO-RS: {getattr(exc, 'reason', exc)}"})
            continue
        for part in parts:
            report.files_received += 1
            (folder / f"{report.files_received:06d}.dcm").write_bytes(part)
            bar.update(1)


def pull_dicomweb(archive, url: str, patient: str | None = None, study: str | None = None,
                  progress: bool = True, pseudonymise=None, timeout: float = 120,
                  headers: dict | None = None) -> PullReport:
    """Pull by DICOMweb: QIDO-RS the studies and their series, WADO-RS each series, ingest what arrived.

    Parameters
    ----------
    archive : an open :class:`~medhash.store.Archive` or its directory (created if missing).
    url : the DICOMweb root, e.g. ``http://pacs:8042/dicom-web``.
    patient, study : a PatientID or a StudyInstanceUID (exactly one).
    headers : extra HTTP headers (e.g. ``{"Authorization": "Bearer ..."}``, :func:`dicomweb_headers`).
    pseudonymise : passed to :func:`~medhash.ingest.ingest`.
    """
    check_query(patient, study)
    root = url.rstrip("/")
    report = PullReport(source=root, method="dicomweb")
    query = {"PatientID": patient} if patient is not None else {"StudyInstanceUID": study}
    query["includefield"] = "00201208"
    found = _qido(f"{root}/studies?{urllib.parse.urlencode(query)}", timeout, headers)
    report.studies = [u for u in (_value(s, "0020000D") for s in found) if u]
    if not report.studies:
        return report
    total = sum(int(_value(s, "00201208") or 0) for s in found)
    with tempfile.TemporaryDirectory(prefix="medhash-pull-") as tmp, progress_bar(total, progress) as bar:
        folder = Path(tmp)
        for uid in report.studies:
            _fetch_study(root, uid, report, folder, bar, timeout, headers)
        return ingest_received(archive, report, folder, progress, pseudonymise)
