"""`medhash listen`: dcmtk's storescu → the storage SCP → the same archive as `medhash ingest`."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medhash import Archive
from medhash.demo import write_demo_cohort
from medhash.ingest import ingest
from medhash.net import Listener
from medhash.ingest.pseudonymise import Pseudonymiser, load_key, make_key

sys.path.insert(0, str(Path(__file__).parents[1]))
import compressed  # noqa: E402
from archives import assert_same_archive  # noqa: E402

# dcmtk's, not the storescu of pynetdicom that an activated .venv puts first on the PATH
STORESCU, ECHOSCU = ("/usr/bin/" + t if os.path.exists("/usr/bin/" + t) else shutil.which(t)
                      for t in ("storescu", "echoscu"))
pytestmark = pytest.mark.skipif(STORESCU is None, reason="dcmtk's storescu is not installed (apt install dcmtk)")
ENV = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk: no Nagle delay (40 ms a file otherwise)
# how long a restarted listener may take to drain its spool: polling ends as soon as it has, so a
# generous ceiling costs nothing on a quiet machine and keeps a loaded CI machine from failing
DEADLINE_S = 300


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    write_demo_cohort(root, n_patients=2, rows=64)
    return root


def storescu(port: int, folder: Path, aet: str = "TESTSCU") -> subprocess.CompletedProcess:
    return subprocess.run([STORESCU, "-aet", aet, "-aec", "MEDHASH", "127.0.0.1", str(port), "+sd", "+r",
                           str(folder)], capture_output=True, text=True, env=ENV, timeout=300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


COMPRESSED = {"1.2.840.10008.1.2.5": "rle", "1.2.840.10008.1.2.4.90": "j2k", "1.2.840.10008.1.2.4.70": "jpeg-lossless"}


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99",
                                    *COMPRESSED])
def test_received_bytes_are_written_as_pynetdicom_would(cohort, syntax, tmp_path, monkeypatch):
    """The fast path of the C-STORE handler: the File Meta Information encoded by hand reads back as
    pynetdicom's own (``create_file_meta``), and the study key is read from the header alone, in
    implicit, explicit and deflated transfer syntaxes, and in compressed ones (RLE, JPEG 2000, JPEG
    lossless: encapsulated pixel data behind an explicit VR little endian header), whose pixels decode
    to the original's."""
    from pynetdicom.dsutils import create_file_meta, encode
    from medhash.net import spool
    from medhash.net.dicom_tuning import file_meta_bytes
    from medhash.net.spool import read_study_key
    original = sorted((cohort / "DEMO001").glob("CT_*.dcm"))[3]
    ds = pydicom.dcmread(original)
    pixels = ds.pixel_array
    implicit, deflated = syntax == "1.2.840.10008.1.2", syntax.endswith(".99")
    if syntax in COMPRESSED:
        if reason := compressed.missing(COMPRESSED[syntax]):
            pytest.skip(reason)
        assert compressed.compress_file(original, tmp_path / "c.dcm", COMPRESSED[syntax])
        ds = pydicom.dcmread(tmp_path / "c.dcm")
        assert ds.file_meta.TransferSyntaxUID == syntax and ds["PixelData"].is_undefined_length

    def as_sent(ds) -> bytes:  # the data set as a C-STORE carries it
        return encode(ds, implicit, True, deflated)
    raw = as_sent(ds)
    mine = file_meta_bytes(str(ds.SOPClassUID), str(ds.SOPInstanceUID), syntax)
    theirs = create_file_meta(sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID,
                              transfer_syntax=pydicom.uid.UID(syntax))
    back = pydicom.dcmread(BytesIO(mine + raw))
    for keyword in theirs.dir():
        if keyword != "FileMetaInformationGroupLength":
            assert back.file_meta[keyword].value == theirs[keyword].value, keyword
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert np.array_equal(back.pixel_array, pixels)
    with monkeypatch.context() as m:
        if not deflated:  # the header alone, never pydicom's file reader (nor the pixel data)
            m.setattr(spool.pydicom, "dcmread", None)
        assert read_study_key(raw, syntax) == str(ds.StudyInstanceUID)
        del ds.StudyInstanceUID  # then the frame of reference groups the files
        assert read_study_key(as_sent(ds), syntax) == str(ds.FrameOfReferenceUID)


def test_study_key_walk_skips_nested_sequences_and_leaves_doubts_to_pydicom(cohort, monkeypatch):
    """The header walk of the C-STORE handler: undefined-length sequences, items and a nested sequence
    before the Study Instance UID are skipped by their delimiters (implicit and explicit VR); a
    truncated header or a UID with two values is not guessed at: pydicom's reader decides."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pynetdicom.dsutils import encode
    from medhash.net import spool
    ds = pydicom.dcmread(sorted((cohort / "DEMO001").glob("CT_*.dcm"))[0])
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "121311", "DCM"
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4"
    ref.PurposeOfReferenceCodeSequence = Sequence([code])
    ds.ReferencedImageSequence = Sequence([ref, ref])  # (0008,1140): before the study (0020,000D)
    ds["ReferencedImageSequence"].is_undefined_length = True
    for item in ds.ReferencedImageSequence:
        item.is_undefined_length_sequence_item = True
    ref["PurposeOfReferenceCodeSequence"].is_undefined_length = True
    calls = []
    from pydicom import filereader
    original = filereader.read_dataset

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)
    monkeypatch.setattr(filereader, "read_dataset", spy)
    for implicit, syntax in ((True, "1.2.840.10008.1.2"), (False, "1.2.840.10008.1.2.1")):
        raw = encode(ds, implicit, True)
        assert raw.count(b"\xfe\xff\xdd\xe0") == 3  # sequence delimiters (1 outer, 2 inner) the walk skips
        assert spool.read_study_key(raw, syntax) == str(ds.StudyInstanceUID)
        assert calls == []  # walked, pydicom's reader not used
        head = raw[:raw.index(str(ds.StudyInstanceUID).encode()) + 4]  # cut inside the study UID
        assert spool._study_key_walked(head, implicit) is None
    two = ds.copy()
    two.StudyInstanceUID = ["1.2.3", "1.2.4"]
    assert spool._study_key_walked(encode(two, False, True), False) is None
    assert spool.read_study_key(encode(two, False, True), "1.2.840.10008.1.2.1") == str(two.StudyInstanceUID)
    assert calls  # that one went to pydicom


@pytest.mark.parametrize("message_id, sop_class, status", [
    (1, "1.2.840.10008.5.1.4.1.1.2", 0x0000), (65535, "1.2.840.10008.5.1.4.1.1.481.3", 0xA700),
    (77, "1.2.840.10008.5.1.4.1.1.481.2", 0xB000)])
def test_c_store_response_is_encoded_as_pynetdicom_would(message_id, sop_class, status):
    """The hand-encoded C-STORE response command set equals pynetdicom's encoding of the same response
    (odd and even UID lengths, success, failure and warning statuses, the largest message ID)."""
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dimse_primitives import C_STORE
    from medhash.net.dicom_tuning import c_store_rsp_command
    for instance in ("1.2.826.0.1.3680043.8.498.17516493074363227659646298173279165771", "1.2.3.44"):
        rsp = C_STORE()
        rsp.MessageID = rsp.MessageIDBeingRespondedTo = message_id
        rsp.AffectedSOPClassUID, rsp.AffectedSOPInstanceUID, rsp.Status = sop_class, instance, status
        message = C_STORE_RSP()
        message.primitive_to_message(rsp)
        (pdata,) = list(message.encode_msg(1, 16384))
        assert pdata.presentation_data_value_list == [(1, b"\x03" + c_store_rsp_command(message_id, sop_class,
                                                                                          instance, status))]


def test_c_store_responses_take_the_hand_encoded_path(cohort, tmp_path, monkeypatch):
    """Every C-STORE of a storescu run is answered through the hand-encoded response (storescu checks
    what it gets: a wrong response fails the transfer); a handler of EVT_DIMSE_SENT other than
    pynetdicom's standard one sends them back to pynetdicom's encoder."""
    from pynetdicom import evt
    from medhash.net import dicom_tuning
    made = []
    fast = dicom_tuning._fast_c_store_rsp

    def spy(*args):
        out = fast(*args)
        made.append(out is not None)
        return out
    monkeypatch.setattr(dicom_tuning, "_fast_c_store_rsp", spy)
    with Listener(tmp_path / "recv", port=0, quiet_s=0.1) as listener:
        out = storescu(listener.port, cohort / "DEMO001")
        assert out.returncode == 0, out.stderr
        files = sum(1 for _ in (cohort / "DEMO001").glob("*.dcm"))
        assert made == [True] * files
        seen = []
        listener._server.bind(evt.EVT_DIMSE_SENT, lambda event: seen.append(type(event.message).__name__))
        made.clear()
        out = storescu(listener.port, cohort / "DEMO001")
        assert out.returncode == 0, out.stderr
        assert made == [False] * files and seen.count("C_STORE_RSP") == files


def test_socket_reader_returns_what_pynetdicom_s_would():
    """The listener's AssociationSocket.recv: exactly the bytes asked for, however the peer cut them,
    and what came before the peer closed when it closed early (as pynetdicom's own recv)."""
    import threading
    from medhash.net.dicom_tuning import _reader

    class Transport:  # what the reader needs of pynetdicom's AssociationSocket
        def __init__(self, sock):
            self.socket = sock
    payload = bytes(range(256)) * 3000  # 768,000 bytes
    a, b = socket.socketpair()
    try:
        recv = _reader(Transport(a))

        def send():
            for k in range(0, len(payload), 70_001):  # pieces that do not match the reads
                b.sendall(payload[k:k + 70_001])
                time.sleep(0.001)
            b.shutdown(socket.SHUT_WR)
        threading.Thread(target=send, daemon=True).start()
        assert recv(6) == payload[:6]
        assert recv(500_000) == payload[6:500_006]
        rest = recv(300_000)  # more than is left: the peer closes first
        assert isinstance(rest, bytearray) and rest == payload[500_006:]
        assert recv(10) == b""
    finally:
        a.close()
        b.close()


def test_storescu_gives_the_same_archive_as_ingest(cohort, tmp_path):
    plain = Archive(tmp_path / "plain", create=True)
    assert ingest(plain, [cohort]).errors == []
    with Listener(tmp_path / "recv", port=0, quiet_s=0.2) as listener:
        out = storescu(listener.port, cohort)
        assert out.returncode == 0, out.stderr
    assert listener.stats["files"] == sum(1 for _ in cohort.rglob("*.dcm"))
    assert listener.stats["series_ingested"] == 2 and listener.stats["errors"] == 0
    recv = Archive(tmp_path / "recv")
    assert_same_archive(plain, recv)
    # a single-patient archive compares byte for byte on the arrays as well
    assert (tmp_path / "recv" / "arrays" / "ct.i16").stat().st_size == (tmp_path / "plain" / "arrays" / "ct.i16").stat().st_size
    assert [p.name for p in (tmp_path / "recv" / "spool").iterdir()] == [".lock"]


def test_compressed_cohort_is_stored_as_received_and_gives_the_same_archive(cohort, tmp_path, monkeypatch):
    """storescu sends compressed files in their own transfer syntax when told to propose it (it cannot
    convert them: without the option, the store fails): DEMO001's CT in JPEG lossless (``-xs``; its 32-bit
    RTDOSE uncompressed) and DEMO002's CT and RTDOSE in RLE (``-xr``), one association each. The
    listener takes them as they are, and the archive is the one of `medhash ingest` of the uncompressed
    cohort."""
    from medhash.net import listen
    jpeg = "jpeg-lossless" if compressed.missing("jpeg-lossless") is None else "rle"
    folder = tmp_path / "dicom"
    compressed.compress_folder(cohort / "DEMO001", folder / "DEMO001", ct=jpeg, dose=None)
    compressed.compress_folder(cohort / "DEMO002", folder / "DEMO002", ct="rle", dose="rle")
    sent = compressed.syntaxes(folder)
    assert sent[("CT", compressed.SYNTAX[jpeg])] >= 50 and sent[("CT", compressed.SYNTAX["rle"])] >= 50
    received: dict[tuple[str, str], int] = {}
    read_study_key = listen.read_study_key

    def spy(raw, syntax):  # what arrived, as the C-STORE handler sees it
        key = (str(pydicom.dcmread(BytesIO(raw), stop_before_pixels=True, force=True).Modality), str(syntax))
        received[key] = received.get(key, 0) + 1
        return read_study_key(raw, syntax)
    monkeypatch.setattr(listen, "read_study_key", spy)
    with Listener(tmp_path / "recv", port=0, quiet_s=0.2) as listener:
        for patient, option in (("DEMO001", "-xs" if jpeg == "jpeg-lossless" else "-xr"), ("DEMO002", "-xr")):
            out = subprocess.run([STORESCU, option, "-aet", "TESTSCU", "-aec", "MEDHASH", "127.0.0.1",
                                  str(listener.port), "+sd", "+r", str(folder / patient)],
                                 capture_output=True, text=True, env=ENV, timeout=300)
            assert out.returncode == 0, out.stderr
    # every compressed file arrived in its own transfer syntax (the uncompressed ones as storescu chose)
    assert {k: n for k, n in received.items() if k[1] in compressed.SYNTAX.values()} == \
        {k: n for k, n in sent.items() if k[1] in compressed.SYNTAX.values()}
    assert sum(received.values()) == sum(sent.values())
    assert listener.stats["series_ingested"] == 2 and listener.stats["errors"] == 0
    plain = Archive(tmp_path / "plain", create=True)
    assert ingest(plain, [cohort]).errors == []
    assert_same_archive(plain, Archive(tmp_path / "recv"))


def test_uncompressed_is_preferred_and_unknown_compression_refused(tmp_path):
    """A sender offering JPEG lossless and explicit VR little endian in one presentation context gets
    explicit VR little endian; offering JPEG lossless alone, JPEG lossless; offering a syntax medhash does
    not decode (MPEG-2), no context."""
    from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1, MPEG2MPML
    from pynetdicom import AE
    from medhash.io.dicom import CT_IMAGE_STORAGE, RT_DOSE_STORAGE, RT_STRUCT_STORAGE as RT_STRUCTURE_SET_STORAGE
    ae = AE(ae_title="NEGOTIATE")
    ae.add_requested_context(CT_IMAGE_STORAGE, [JPEGLosslessSV1, ExplicitVRLittleEndian])
    ae.add_requested_context(RT_DOSE_STORAGE, [JPEGLosslessSV1])
    ae.add_requested_context(RT_STRUCTURE_SET_STORAGE, [MPEG2MPML])
    with Listener(tmp_path / "a", port=0, quiet_s=0) as listener:
        assoc = ae.associate("127.0.0.1", listener.port, ae_title="MEDHASH")
        try:
            assert assoc.is_established
            accepted = {cx.abstract_syntax: cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
            rejected = [cx.abstract_syntax for cx in assoc.rejected_contexts]
        finally:
            assoc.release()
    assert accepted == {CT_IMAGE_STORAGE: ExplicitVRLittleEndian, RT_DOSE_STORAGE: JPEGLosslessSV1}
    assert rejected == [RT_STRUCTURE_SET_STORAGE]


def test_unknown_calling_ae_is_refused(cohort, tmp_path):
    with Listener(tmp_path / "a", port=0, allow_ae=["GOOD"], quiet_s=0) as listener:
        out = storescu(listener.port, cohort / "DEMO001", aet="EVIL")
        assert out.returncode != 0 and "Calling AE Title Not Recognized" in out.stderr
        echo = subprocess.run([ECHOSCU, "-aet", "GOOD", "-aec", "MEDHASH", "127.0.0.1", str(listener.port)],
                              capture_output=True, text=True, env=ENV, timeout=30)
        assert echo.returncode == 0, echo.stderr
    assert len(Archive(tmp_path / "a")) == 0 and listener.stats["files"] == 0


def test_other_sop_classes_are_refused(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID, ds.Modality = "X", "MR"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    (tmp_path / "mr").mkdir()
    ds.save_as(tmp_path / "mr" / "mr.dcm", enforce_file_format=True)
    with Listener(tmp_path / "a", port=0, quiet_s=0) as listener:
        out = storescu(listener.port, tmp_path / "mr")
    assert out.returncode != 0 and listener.stats["files"] == 0
    assert not any((tmp_path / "a" / "spool").glob("*/*.dcm"))


def test_killed_listener_loses_nothing_acknowledged(cohort, tmp_path):
    arch, port = tmp_path / "arch", free_port()
    cmd = [sys.executable, "-m", "medhash.cli", "listen", "--archive", str(arch), "--port", str(port),
           "--quiet", "600"]  # nothing is ingested before the kill
    proc = _start_listener(cmd)
    try:
        out = storescu(port, cohort)
        assert out.returncode == 0, out.stderr  # every file acknowledged
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # studies the association moved on from may already be ingested (in their own process); the rest
    # is in the spool: nothing acknowledged is missing
    spooled = len(list((arch / "spool").glob("*/*.dcm")))
    assert spooled > 0
    # restarted: the spool waits for the quiet period (600 s); stopped with SIGTERM (as Ctrl-C), which
    # ingests everything spooled
    proc = _start_listener(cmd)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 0, err
    assert "series ingested" in err and "Traceback" not in err
    plain = Archive(tmp_path / "plain", create=True)
    ingest(plain, [cohort])
    assert_same_archive(plain, Archive(arch))
    assert not list((arch / "spool").glob("*/*.dcm"))


def _start_listener(cmd: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    head = ""
    for _ in range(5):
        head += proc.stderr.readline()
        if "receiving DICOM" in head:
            return proc
    proc.kill()
    raise AssertionError(head)


def test_listener_killed_mid_transfer_keeps_every_acknowledged_file(cohort, tmp_path):
    """SIGKILL while an association is sending (one study complete, the next one's CT half sent): the
    restarted listener ends with exactly the acknowledged files, as `medhash ingest` of them gives."""
    from pynetdicom import AE
    arch, port = tmp_path / "arch", free_port()
    cmd = [sys.executable, "-m", "medhash.cli", "listen", "--archive", str(arch), "--port", str(port),
           "--quiet", "600"]
    files = [f for pt in ("DEMO001", "DEMO002") for f in sorted((cohort / pt).glob("*.dcm"), key=lambda f: (
        not f.name.startswith("CT_"), f.name))]  # DEMO001's CT, RTDOSE, RTSTRUCT, then DEMO002's CT
    kill_after = 50 + 2 + 25   # the first study, and 25 of the second study's 60 CT slices
    ae = AE(ae_title="KILLTEST")
    for uid in {str(pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID) for f in files}:
        ae.add_requested_context(uid)
    proc = _start_listener(cmd)
    acknowledged: list[Path] = []
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="MEDHASH")
        assert assoc.is_established
        for f in files:
            status = assoc.send_c_store(pydicom.dcmread(f))
            assert status and status.Status == 0x0000, f
            acknowledged.append(f)
            if len(acknowledged) == kill_after:
                break
        proc.send_signal(signal.SIGKILL)  # the association is still open, the second study half sent
        proc.wait()
        assoc.abort()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acknowledged) == kill_after
    # the first study was closed (the sender moved on by more than CLOSE_AFTER_FILES) and may have been
    # ingested, or been killed while ingesting; the rest is in the spool
    assert list((arch / "spool").glob("*/*.dcm"))
    proc = _start_listener(cmd[:-1] + ["0.2"])
    try:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and (len(Archive(arch).patients()) < 2
                                          or list((arch / "spool").glob("*/*.dcm"))):
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert not list((arch / "spool").glob("*/*.dcm*"))
    sent = tmp_path / "acknowledged"
    for f in acknowledged:
        (sent / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, sent / f.parent.name / f.name)
    reference = Archive(tmp_path / "reference", create=True)
    ingest(reference, [sent])
    assert len(reference.slices("DEMO002")) > 0
    assert_same_archive(reference, Archive(arch))


def test_half_written_spool_files_are_dropped_at_start(cohort, tmp_path, caplog):
    """A file being written when the listener died (``*.dcm.part``, never acknowledged) is dropped; a file
    cut short under its own name (what a power cut between rename and fsync can leave) is set aside in
    spool/failed/ with the reason; the complete files beside them are ingested."""
    arch = tmp_path / "arch"
    Archive(arch, create=True)
    folder = arch / "spool" / "20260101T000000-1-1.1"
    folder.mkdir(parents=True)
    cts = sorted((cohort / "DEMO001").glob("CT_*.dcm"))
    for f in cts[:-2]:
        shutil.copy(f, folder / f.name)
    half = cts[-1].read_bytes()
    (folder / (cts[-1].name + ".part")).write_bytes(half[: len(half) // 2])
    (folder / cts[-2].name).write_bytes(cts[-2].read_bytes()[:-100])
    with caplog.at_level("WARNING", logger="medhash.net.listen"):
        with Listener(arch, port=0, quiet_s=0.1) as listener:
            deadline = time.monotonic() + DEADLINE_S
            while time.monotonic() < deadline and folder.exists():
                time.sleep(0.1)
    left = [p for p in (arch / "spool").glob("*/*") if "failed" not in p.parts]
    assert not left, (left, listener.stats)
    assert "1 file(s) left cut short" in caplog.text
    aside = arch / "spool" / "failed" / folder.name
    assert sorted(p.name for p in aside.iterdir()) == sorted([cts[-2].name, "problems.txt"])
    assert "cut short" in (aside / "problems.txt").read_text()
    reference = Archive(tmp_path / "reference", create=True)
    ingest(reference, cts[:-2])
    assert_same_archive(reference, Archive(arch))


@pytest.mark.parametrize("kind", ["CT", "RD", "RS", "rle"])
def test_spooled_file_complete_finds_every_cut(cohort, kind, tmp_path):
    """The check behind the start-up recovery: a spooled file is complete when its data set ends exactly
    after its last element. Cuts where a power cut leaves them (at 4 KiB blocks: in the pixel data, in a
    sequence of the RTSTRUCT, in a compressed fragment) and cuts inside an element or right after the
    file meta are found; whole files pass."""
    from medhash.net.spool import spooled_file_complete
    source = sorted((cohort / "DEMO001").glob(f"{'CT' if kind == 'rle' else kind}_*.dcm"))[0]
    if kind == "rle":
        if reason := compressed.missing("rle"):
            pytest.skip(reason)
        assert compressed.compress_file(source, tmp_path / "c.dcm", "rle")
        source = tmp_path / "c.dcm"
    raw = source.read_bytes()
    path = tmp_path / "x.dcm"
    path.write_bytes(raw)
    assert spooled_file_complete(path)
    meta_end = 132 + 12 + int.from_bytes(raw[140:144], "little")
    cuts = sorted({meta_end, meta_end + 1, meta_end + 3, len(raw) // 2, len(raw) - 2, len(raw) - 1,
                   *range(4096, len(raw), 4096)})
    for cut in cuts:
        path.write_bytes(raw[:cut])
        assert not spooled_file_complete(path), (kind, cut, len(raw))
    path.write_bytes(raw[:100])
    assert not spooled_file_complete(path)


@pytest.mark.parametrize("rename_first", [False, True])
def test_write_atomic_leaves_the_whole_file_and_no_part(tmp_path, rename_first):
    from medhash.net.spool import write_atomic
    target = tmp_path / "a.dcm"
    write_atomic(target, b"x" * 100_000, b"yz", rename_durable_with_file=rename_first)
    assert target.read_bytes() == b"x" * 100_000 + b"yz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dcm"]


def test_filesystem_type_agrees_with_findmnt(tmp_path):
    from medhash.store.durable import RENAME_DURABLE_WITH_FILE, filesystem_type
    findmnt = shutil.which("findmnt")
    if findmnt is None:
        pytest.skip("findmnt (util-linux) is not installed")
    for path in (tmp_path, Path("/proc/self"), Path("/")):
        out = subprocess.run([findmnt, "-n", "-o", "FSTYPE", "--target", str(path)], capture_output=True, text=True)
        assert filesystem_type(path) == out.stdout.strip(), path
    assert filesystem_type("/proc") not in RENAME_DURABLE_WITH_FILE


def test_pseudonymised_listen_keeps_originals_out(cohort, tmp_path):
    key = make_key(tmp_path / "key")
    with Listener(tmp_path / "pseudo", port=0, pseudonymise=key, quiet_s=0.2) as listener:
        # while spooled, the files are already pseudonymised
        out = storescu(listener.port, cohort)
        assert out.returncode == 0, out.stderr
    plain = Archive(tmp_path / "plain", create=True)
    ingest(plain, [cohort])
    p = Pseudonymiser(load_key(key))
    assert_same_archive(plain, Archive(tmp_path / "pseudo"), map_pid=p.patient_id)
    originals = [b"DEMO00"]
    for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(cohort.rglob("*.dcm"))):
        originals += [str(ds[k].value).encode() for k in ("StudyInstanceUID", "SeriesInstanceUID",
                                                           "SOPInstanceUID", "FrameOfReferenceUID") if k in ds]
    blob = b"".join(f.read_bytes() for f in (tmp_path / "pseudo").rglob("*") if f.is_file())
    assert not {o for o in originals if o in blob}


def test_cli_errors_are_clear(tmp_path, capsys):
    from medhash.cli import main
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        code = main(["listen", "--archive", str(tmp_path / "a"), "--port", str(s.getsockname()[1])])
    err = capsys.readouterr().err
    assert code == 5 and "the port is in use" in err and "Traceback" not in err
    assert main(["listen", "--archive", str(tmp_path / "no" / "such" / "a")]) == 3
    assert "archive missing" in capsys.readouterr().err
    (tmp_path / "short.key").write_bytes(b"0123")
    assert main(["listen", "--archive", str(tmp_path / "b"), "--pseudonymise", str(tmp_path / "short.key")]) == 1
    assert "must hold at least 32" in capsys.readouterr().err
