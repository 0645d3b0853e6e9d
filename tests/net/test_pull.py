"""`medhash pull` against a real Orthanc (Debian's, started on free loopback ports; see tests/orthanc.py).

C-MOVE, C-GET and DICOMweb must give the same archive as `medhash ingest` of the same folder; an
unknown patient is exit code 4 and an unreachable PACS exit code 1, both with a message, no traceback.
"""
from __future__ import annotations

import contextlib
import http.server
import json
import sys
import threading
from pathlib import Path

import pytest

from medhash.store.archive import Archive
from medhash.cli import main
from medhash.demo import write_demo_cohort

sys.path.insert(0, str(Path(__file__).parents[1]))
import archives  # noqa: E402
import compressed  # noqa: E402
from orthanc import SKIP_REASON, OrthancServer, free_port  # noqa: E402

pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_demo_cohort(tmp_path_factory.mktemp("cohort"), n_patients=2, rows=64)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, cohort):
    with OrthancServer(tmp_path_factory.mktemp("orthanc")) as server:
        files = sorted(p for folder in cohort for p in folder.glob("*.dcm"))
        assert server.upload(files) == len(files)
        yield server


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cohort):
    """`medhash ingest` of DEMO001's folder."""
    path = tmp_path_factory.mktemp("ref") / "archive"
    assert main(["ingest", str(cohort[0]), "--archive", str(path), "--no-progress"]) == 0
    return Archive(path)


@contextlib.contextmanager
def dicomweb_stub(do_get):
    """A local HTTP server whose GET requests ``do_get(handler)`` answers; yields its DICOMweb root URL."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            do_get(self)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()


def assert_same_archive(path: Path, reference: Archive) -> None:
    """The pulled archive at ``path`` is the folder ingest of DEMO001 (dose on every slice)."""
    assert reference.patients() == ["DEMO001"]
    archives.assert_same_archive(reference, Archive(path), min_slices=11, dose_required=True)


def test_pull_c_move(orthanc, reference, tmp_path, capsys):
    arch = tmp_path / "archive"
    code = main(["pull", "--archive", str(arch), "--pacs", f"127.0.0.1:{orthanc.dicom_port}", "--aec", "ORTHANC",
                 "--aet", "MEDHASH", "--move-port", str(orthanc.move_port), "--no-get-fallback",
                 "--patient", "DEMO001", "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "by move" in out.out and "ingested 1 series" in out.out
    assert_same_archive(arch, reference)
    # again: nothing new, exit 0
    assert main(["pull", "--archive", str(arch), "--pacs", f"127.0.0.1:{orthanc.dicom_port}", "--aec", "ORTHANC",
                 "--move-port", str(orthanc.move_port), "--patient", "DEMO001", "--no-progress", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ingest"]["series_existing"] == 1 and rep["failed"] == []


def test_pull_c_get_and_fallback(orthanc, reference, tmp_path, capsys):
    """--get needs no modality on the PACS; a C-MOVE to an AE title the PACS does not know falls back to C-GET."""
    arch = tmp_path / "get"
    assert main(["pull", "--archive", str(arch), "--pacs", f"127.0.0.1:{orthanc.dicom_port}", "--aec", "ORTHANC",
                 "--get", "--patient", "DEMO001", "--no-progress", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["method"] == "get" and len(rep["studies"]) == 1
    assert_same_archive(arch, reference)
    arch2 = tmp_path / "fallback"
    assert main(["pull", "--archive", str(arch2), "--pacs", f"127.0.0.1:{orthanc.dicom_port}", "--aec", "ORTHANC",
                 "--aet", "UNKNOWN", "--move-port", str(free_port()), "--study", rep["studies"][0],
                 "--no-progress", "--json"]) == 0
    rep2 = json.loads(capsys.readouterr().out)
    assert rep2["method"] == "get" and rep2["files_received"] == rep["files_received"]
    assert_same_archive(arch2, reference)


def test_refused_c_move_without_fallback_is_exit_1(orthanc, tmp_path, capsys):
    arch = tmp_path / "a"
    assert main(["pull", "--archive", str(arch), "--pacs", f"127.0.0.1:{orthanc.dicom_port}", "--aec", "ORTHANC",
                 "--aet", "UNKNOWN", "--move-port", str(free_port()), "--no-get-fallback", "--patient", "DEMO001",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "C-MOVE to UNKNOWN" in err and "must know AE title 'UNKNOWN'" in err and "Traceback" not in err
    assert not arch.exists()


def test_pull_dicomweb(orthanc, reference, tmp_path, capsys):
    arch = tmp_path / "archive"
    code = main(["pull", "--archive", str(arch), "--dicomweb", orthanc.dicomweb, "--patient", "DEMO001",
                 "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "by dicomweb" in out.out and "ingested 1 series" in out.out
    assert_same_archive(arch, reference)


def test_pull_pseudonymise(orthanc, tmp_path, capsys):
    key = tmp_path / "key"
    assert main(["keygen", str(key)]) == 0
    arch = tmp_path / "archive"
    assert main(["pull", "--archive", str(arch), "--dicomweb", orthanc.dicomweb, "--patient", "DEMO002",
                 "--pseudonymise", str(key), "--no-progress"]) == 0
    (pid,) = Archive(arch).patients()
    assert pid.startswith("P") and pid != "DEMO002"


def test_unknown_patient_is_exit_4(orthanc, tmp_path, capsys):
    for source in (["--pacs", f"127.0.0.1:{orthanc.dicom_port}", "--aec", "ORTHANC"],
                   ["--dicomweb", orthanc.dicomweb]):
        assert main(["pull", "--archive", str(tmp_path / "a"), *source, "--patient", "NOBODY", "--no-progress"]) == 4
        err = capsys.readouterr().err
        assert "nothing found" in err and "NOBODY" in err and "Traceback" not in err
    assert not (tmp_path / "a").exists()  # no archive created for nothing


def test_unreachable_pacs_is_exit_1(tmp_path, capsys):
    port = free_port()
    assert main(["pull", "--archive", str(tmp_path / "a"), "--pacs", f"127.0.0.1:{port}", "--aec", "PACS",
                 "--patient", "DEMO001", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the PACS at 127.0.0.1:{port}" in err and "Traceback" not in err
    assert main(["pull", "--archive", str(tmp_path / "a"), "--dicomweb", f"http://127.0.0.1:{port}/dicom-web",
                 "--patient", "DEMO001", "--no-progress"]) == 1
    assert "cannot reach the DICOMweb server" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_rejected_association_is_exit_1(orthanc, tmp_path, capsys):
    assert main(["pull", "--archive", str(tmp_path / "a"), "--pacs", f"127.0.0.1:{orthanc.dicom_port}",
                 "--aec", "WRONG", "--patient", "DEMO001", "--no-progress"]) == 1
    err = capsys.readouterr().err
    # Orthanc refuses by A-ASSOCIATE-RJ or A-ABORT depending on timing: one message for both
    assert "refused the association" in err and "'WRONG'" in err and "Traceback" not in err
    assert "check both AE titles" in err


def test_pull_command_line_errors(tmp_path, capsys):
    a = str(tmp_path / "a")
    assert main(["pull", "--archive", a, "--patient", "X"]) == 1
    assert "--pacs HOST:PORT" in capsys.readouterr().err
    assert main(["pull", "--archive", a, "--pacs", "h:1", "--patient", "X"]) == 1
    assert "--aec" in capsys.readouterr().err
    assert main(["pull", "--archive", a, "--pacs", "nocolon", "--aec", "P", "--patient", "X"]) == 1
    assert "HOST:PORT" in capsys.readouterr().err
    assert main(["pull", "--archive", a, "--dicomweb", "http://x", "--patient", "X", "--study", "1.2"]) == 1
    assert "one of them" in capsys.readouterr().err
    for bad in ("*", "DEMO*", ""):
        assert main(["pull", "--archive", a, "--dicomweb", "http://x", "--patient", bad]) == 1
        assert "one exact value" in capsys.readouterr().err
    assert not Path(a).exists()


def test_pull_dicomweb_with_basic_authentication(tmp_path, cohort, reference, capsys, monkeypatch):
    """An Orthanc that requires a login: no credentials and a wrong password are clear errors (exit 1,
    nothing created); --dicomweb-user with $MEDHASH_DICOMWEB_PASSWORD pulls the same archive."""
    with OrthancServer(tmp_path / "orthanc", users={"alice": "s3cret pass"}) as server:
        files = sorted(cohort[0].glob("*.dcm"))
        assert server.upload(files) == len(files)
        arch = tmp_path / "archive"
        cmd = ["pull", "--archive", str(arch), "--dicomweb", server.dicomweb, "--patient", "DEMO001", "--no-progress"]
        monkeypatch.delenv("MEDHASH_DICOMWEB_TOKEN", raising=False)
        monkeypatch.delenv("MEDHASH_DICOMWEB_PASSWORD", raising=False)
        assert main(cmd) == 1
        err = capsys.readouterr().err
        assert "HTTP 401" in err and "needs credentials: give a DICOMweb user and password, or a token" in err
        monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
        assert main(cmd + ["--dicomweb-user", "alice"]) == 1
        assert "MEDHASH_DICOMWEB_PASSWORD" in capsys.readouterr().err
        monkeypatch.setenv("MEDHASH_DICOMWEB_PASSWORD", "wrong")
        assert main(cmd + ["--dicomweb-user", "alice"]) == 1
        err = capsys.readouterr().err
        assert "credentials given were refused" in err and "wrong" not in err
        assert not arch.exists()
        monkeypatch.setenv("MEDHASH_DICOMWEB_PASSWORD", "s3cret pass")
        assert main(cmd + ["--dicomweb-user", "alice"]) == 0
        out = capsys.readouterr()
        assert "s3cret" not in out.out + out.err
    assert_same_archive(arch, reference)


def test_dicomweb_bearer_token_from_file_or_environment(tmp_path, capsys, monkeypatch):
    """--dicomweb-token-file (or $MEDHASH_DICOMWEB_TOKEN) sends 'Authorization: Bearer TOKEN'."""
    seen = []

    def do_get(handler):
        seen.append(handler.headers.get("Authorization"))
        ok = handler.headers.get("Authorization") == "Bearer tok-123"
        handler.send_response(200 if ok else 401)
        handler.send_header("Content-Type", "application/dicom+json")
        handler.end_headers()
        handler.wfile.write(b"[]" if ok else b"")

    with dicomweb_stub(do_get) as url:
        cmd = ["pull", "--archive", str(tmp_path / "a"), "--dicomweb", url, "--patient", "X", "--no-progress"]
        token = tmp_path / "token"
        token.write_text("tok-123\n")
        monkeypatch.delenv("MEDHASH_DICOMWEB_TOKEN", raising=False)
        assert main(cmd + ["--dicomweb-token-file", str(token)]) == 4  # authorised; nothing found
        assert "nothing found" in capsys.readouterr().err
        monkeypatch.setenv("MEDHASH_DICOMWEB_TOKEN", "tok-123")
        assert main(cmd) == 4
        monkeypatch.setenv("MEDHASH_DICOMWEB_TOKEN", "other")
        assert main(cmd) == 1
        assert "credentials given were refused" in capsys.readouterr().err
        assert main(cmd + ["--dicomweb-token-file", str(tmp_path / "missing")]) == 1
        assert "cannot read the DICOMweb token file" in capsys.readouterr().err
    assert seen[:3] == ["Bearer tok-123", "Bearer tok-123", "Bearer other"]


# --------------------------------------------------------------------------------------- compressed
@pytest.fixture(scope="module")
def orthanc_compressed(tmp_path_factory, cohort):
    """An Orthanc that stores DEMO001 compressed (CT in JPEG lossless with dcmcjpeg, RLE without dcmtk; the
    32-bit RTDOSE in RLE with dcmcrle, uncompressed without dcmtk) and does not transcode over DIMSE
    (``TranscodeDicomProtocol: false``), as a PACS without transcoding: it sends a file in the transfer
    syntax it stored, or fails that C-STORE."""
    root = tmp_path_factory.mktemp("orthanc_compressed")
    ct = "jpeg-lossless" if compressed.missing("jpeg-lossless") is None else "rle"
    folder = compressed.compress_folder(cohort[0], root / "dicom", ct=ct, dose="rle")
    with OrthancServer(root / "orthanc", options={"TranscodeDicomProtocol": False}) as server:
        files = sorted(folder.glob("*.dcm"))
        assert server.upload(files) == len(files)
        server.stored = {k[1] for k in compressed.syntaxes(folder)}  # the transfer syntaxes stored
        server.ct_syntax = compressed.SYNTAX[ct]
        yield server


@pytest.mark.parametrize("how", ["move", "get", "dicomweb"])
def test_pull_compressed_as_stored(orthanc_compressed, reference, tmp_path, capsys, monkeypatch, how):
    """C-MOVE, C-GET and DICOMweb deliver the compressed files in the transfer syntax Orthanc stored
    (nothing transcoded on the way) and the archive is the one of the uncompressed folder's ingest."""
    import pydicom
    from io import BytesIO
    from medhash.net import dicomweb, dimse
    server, arrived = orthanc_compressed, []
    handler, split = dimse._store_handler, dicomweb.split_multipart

    def spy_handler(*args):  # DIMSE: the presentation context each C-STORE came on
        inner = handler(*args)

        def handle(event):
            arrived.append(str(event.context.transfer_syntax))
            return inner(event)
        return handle

    def spy_split(*args):  # DICOMweb: the transfer syntax in each part's file meta
        parts = split(*args)
        arrived.extend(str(pydicom.dcmread(BytesIO(p), stop_before_pixels=True).file_meta.TransferSyntaxUID)
                       for p in parts)
        return parts
    monkeypatch.setattr(dimse, "_store_handler", spy_handler)
    monkeypatch.setattr(dicomweb, "split_multipart", spy_split)
    arch = tmp_path / "archive"
    source = (["--dicomweb", server.dicomweb] if how == "dicomweb" else
              ["--pacs", f"127.0.0.1:{server.dicom_port}", "--aec", "ORTHANC", "--aet", "MEDHASH",
               "--move-port", str(server.move_port), "--get" if how == "get" else "--no-get-fallback"])
    code = main(["pull", "--archive", str(arch), *source, "--patient", "DEMO001", "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"by {how}" in out.out and "ingested 1 series" in out.out
    assert len(arrived) == 52 and server.ct_syntax in arrived
    assert set(arrived) == server.stored
    assert_same_archive(arch, reference)


def test_dicomweb_server_refusing_any_transfer_syntax_is_asked_again(tmp_path, cohort, reference, capsys):
    """A WADO-RS server that answers 406 Not Acceptable to ``transfer-syntax=*`` is asked again without it
    (the default, explicit VR little endian), and the pull goes on."""
    from medhash.net import WADO_ACCEPT, WADO_ACCEPT_PLAIN

    files = sorted(cohort[0].glob("*.dcm"))
    accepts = []

    def do_get(handler):
        path, accept = handler.path.split("?")[0], handler.headers.get("Accept", "")
        if path.endswith("/studies"):
            body, ctype = json.dumps([{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]).encode(), \
                "application/dicom+json"
        elif path.endswith("/series"):
            body, ctype = json.dumps([{"0020000E": {"vr": "UI", "Value": ["1.2.3.4"]}}]).encode(), \
                "application/dicom+json"
        else:
            accepts.append(accept)
            if "transfer-syntax" in accept:
                handler.send_response(406)
                handler.end_headers()
                return
            body = b"".join(b"--B\r\nContent-Type: application/dicom\r\n\r\n" + f.read_bytes() + b"\r\n"
                            for f in files) + b"--B--\r\n"
            ctype = 'multipart/related; type="application/dicom"; boundary=B'
        handler.send_response(200)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with dicomweb_stub(do_get) as url:
        arch = tmp_path / "archive"
        code = main(["pull", "--archive", str(arch), "--dicomweb", url, "--patient", "DEMO001", "--no-progress"])
        assert code == 0, capsys.readouterr().err
    assert accepts == [WADO_ACCEPT, WADO_ACCEPT_PLAIN]
    assert_same_archive(arch, reference)
