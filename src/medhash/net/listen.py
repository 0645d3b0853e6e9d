"""A DICOM storage SCP that feeds the archive: what ``medhash listen`` runs.

Flow of one file::

    C-STORE ──▶ ARCHIVE/spool/<association>.<n>/<SOPInstanceUID>.dcm   (tmp, rename, fsync; then 0x0000)
                       │  one spool folder per study (StudyInstanceUID, else FrameOfReferenceUID) of an
                       │  association; the study is *closed* when the association has moved on to other
                       │  studies for CLOSE_AFTER_FILES files, or when the association ends
                       ▼
               ingest processes (INGEST_PROCESSES studies at a time, never two of one study, while
               receiving goes on; their archive writes take turns):
               medhash.ingest.pipeline.ingest(archive, [closed study folders])  (the code path of `medhash ingest`)
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
written by hand (:func:`file_meta_bytes`), the study read by walking the header's element headers
(:func:`read_study_key`, 20 microseconds) and the durable write (about 1 ms, one fsync on ext4, XFS
and btrfs: :func:`write_atomic`). The network thread of each association is told to poll every
:data:`DUL_LOOP_DELAY_S` instead of pynetdicom's 1 ms. The ingest processes run at a lower priority
(:data:`INGEST_NICE`): acknowledging a file waits on the CPU, ingest can wait.

A file is acknowledged (status 0x0000) only once it is on disk, so a listener killed at any moment
loses nothing it acknowledged: whatever is left in the spool is ingested at the next start (all
folders together), and a folder is deleted only after its ingest has committed.
Accepted SOP classes: CT Image Storage, RT Dose, RT Structure Set, RT Plan (plans are accepted so a
planning system's export does not fail, but the archive stores no plans) and Verification (C-ECHO).
Other SOP classes get no presentation context (the sender reports them as not sent).
Transfer syntaxes: the uncompressed ones first, then the compressed ones medhash decodes
(:data:`medhash.io.dicom.COMPRESSED_SYNTAXES`: JPEG lossless, JPEG 2000, JPEG-LS, RLE, lossy JPEG), so
a sender that offers both sends uncompressed, and a PACS that cannot transcode sends what it stored.
Files are spooled as they were received (no transcoding); ingest decodes them.
With a pseudonymisation key, every data set is pseudonymised before it is written to the spool, so
original identifiers never reach the archive folder.
"""
from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import os
import re
import shutil
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pydicom

from ..store.archive import CATALOG, Archive
from ..errors import ArchiveError, MedhashError
from ..io.dicom import (COMPRESSED_SYNTAXES, CT_IMAGE_STORAGE, RECEIVED_SOP_CLASSES, RECEIVED_SYNTAXES,  # noqa: F401
                        RT_DOSE_STORAGE, RT_PLAN_STORAGE, RT_STRUCT_STORAGE, walk_elements)
from ..store.durable import RENAME_DURABLE_WITH_FILE, filesystem_type, fsync_dir

log = logging.getLogger(__name__)

RT_STRUCTURE_SET_STORAGE = RT_STRUCT_STORAGE
VERIFICATION = "1.2.840.10008.1.1"
ACCEPTED_SOP_CLASSES = RECEIVED_SOP_CLASSES
"""SOP Class UID -> short name of the storage SOP classes the listener accepts."""
TRANSFER_SYNTAXES = RECEIVED_SYNTAXES
"""Transfer syntaxes accepted for them, in order of preference: uncompressed first."""

STATUS_SUCCESS = 0x0000
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000

SPOOL = "spool"
FAILED = "failed"
_PART = ".part"
_counter = itertools.count(1)
CLOSE_AFTER_FILES = 16
"""A study of an association is closed (and ingested) once the association has sent this many files of
other studies since the study's last file."""
INGEST_PROCESSES = min(2, os.cpu_count() or 1)
"""Studies ingested at the same time, each in a process of its own (never two of the same study); their
writes to the archive take turns (:data:`LOCK_WAIT_S`)."""
INGEST_NICE = 10
"""Niceness added to the ingest processes: on a busy machine the threads that receive (each C-STORE waits
for them) get the CPU first, and ingest takes the rest (all of it once the senders stop)."""
LOCK_WAIT_S = 120.0
"""How long an ingest process waits for the other's write to the archive (one series: milliseconds)."""


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


@dataclass(eq=False)
class _Group:
    """The spool folder of one study received on one association."""

    assoc: _Assoc
    key: str
    folder: Path
    files: int = 0
    last: int = 0              # the association's file count at this group's last file
    quiet: bool = False        # closed by the association's end: wait for the quiet period


_child_archive: Archive | None = None


def _child_init() -> None:
    """In the ingest process: die with the listener (a killed listener leaves no ingest running), leave
    Ctrl-C to the listener, and take a lower priority (:data:`INGEST_NICE`)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the listener, which stops us
    try:
        os.nice(INGEST_NICE)
    except OSError:
        pass


def _child_start(archive_dir: str) -> None:
    """Start of an ingest process: die with the listener, import the ingest code and open the archive
    now, so that the first study received does not wait for them (about 0.5 s)."""
    global _child_archive
    _child_init()
    from ..ingest.pipeline import ingest  # noqa: F401  (pydicom, numpy, scipy and the readers with it)
    _child_archive = Archive(archive_dir, lock_wait_s=LOCK_WAIT_S)


def _child_ingest(archive_dir: str, folders: list[str]):
    """``medhash.ingest.pipeline.ingest`` in the ingest process (the archive stays open between calls)."""
    global _child_archive
    from ..ingest.pipeline import ingest
    if _child_archive is None:
        _child_archive = Archive(archive_dir, lock_wait_s=LOCK_WAIT_S)
    return ingest(_child_archive, folders)


def _check_ae_title(title: str) -> str:
    title = str(title).strip()
    if not 1 <= len(title) <= 16 or not title.isascii() or "\\" in title or not title.isprintable():
        raise MedhashError(f"AE title {title!r}: must be 1 to 16 printable ASCII characters without a backslash")
    return title


def _safe_name(uid: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]", "_", uid.strip().strip("\0")) or "instance"


def write_atomic(path: Path, *chunks: bytes, rename_durable_with_file: bool = False) -> None:
    """Write the concatenated ``chunks`` to ``path`` so that the file is complete and on disk, under
    its name, when this returns; a process killed before leaves at most ``path`` + ``.part``.

    The file is written under a temporary name and renamed once complete. Then, by default, the file is
    fsynced before the rename and its folder after it (two journal commits). With
    ``rename_durable_with_file`` (for the filesystems of :data:`~medhash.store.durable.RENAME_DURABLE_WITH_FILE`)
    the file is renamed first and fsynced once, which makes its data and its new name durable together
    (one commit, 0.1-0.3 ms less a file here). A power cut between that rename and the fsync can leave a
    file cut short under its name (never acknowledged): :func:`spooled_file_complete` finds it.
    """
    tmp = path.with_name(path.name + _PART)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for data in chunks:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        if rename_durable_with_file:
            os.replace(tmp, path)
            os.fsync(fd)
            return
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _element(group_elem: int, vr: bytes, value: bytes) -> bytes:
    """One explicit-VR little-endian data element (the File Meta Information's encoding)."""
    tag = struct.pack("<HH", group_elem >> 16, group_elem & 0xFFFF)
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return tag + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def file_meta_bytes(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information of a received data set: the same elements as
    ``pynetdicom.dsutils.create_file_meta`` (what ``event.encoded_dataset`` writes), encoded directly.

    pydicom's writer takes about 1 ms a file for these seven elements; this takes microseconds, which
    matters on the receiving path, where every millisecond is paid once per C-STORE.
    """
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
    version = PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
    body = b"".join((
        _element(0x00020001, b"OB", b"\0\1"),
        _element(0x00020002, b"UI", _uid(sop_class)),
        _element(0x00020003, b"UI", _uid(sop_instance)),
        _element(0x00020010, b"UI", _uid(transfer_syntax)),
        _element(0x00020012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID)),
        _element(0x00020013, b"SH", version + b" " if len(version) % 2 else version),
    ))
    return b"\0" * 128 + b"DICM" + _element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


_STUDY_TAGS = (0x0020000D, 0x00200052)  # StudyInstanceUID, FrameOfReferenceUID
_PLAIN_SYNTAXES = {"1.2.840.10008.1.2": (True, True), "1.2.840.10008.1.2.1": (False, True),
                   "1.2.840.10008.1.2.2": (False, False),
                   # encapsulated (compressed) pixel data: the data set itself is explicit VR little endian;
                   # the header is read up to the study, long before the Pixel Data (of undefined length)
                   **{uid: (False, True) for uid in COMPRESSED_SYNTAXES}}
"""Transfer syntaxes whose data set is read as is: UID -> (implicit VR, little endian)."""


def _study_key_walked(raw, implicit: bool) -> str | None:
    """:func:`read_study_key` for a little-endian data set by walking its element headers (about 20
    times faster than pydicom's reader); None when the walk is not sure (then pydicom reads it)."""
    found: dict[int, bytes] = {}
    if walk_elements(raw, 0, implicit, stop=_STUDY_TAGS[1], capture=_STUDY_TAGS, found=found) < 0:
        return None
    values = []
    for tag in _STUDY_TAGS:
        try:
            value = found.get(tag, b"").decode("ascii").strip("\0 ")
        except UnicodeDecodeError:
            return None
        if "\\" in value:  # several values: pydicom's reading decides what that means
            return None
        values.append(value)
    return values[0] or values[1]


def read_study_key(raw: bytes, transfer_syntax: str) -> str:
    """StudyInstanceUID, else FrameOfReferenceUID, of an encoded data set ('' when it has neither).

    Only the elements up to (0020,0052) are parsed: the header of a CT slice, never its pixels (compressed
    pixel data included). Little-endian data sets are walked element by element without decoding
    (:func:`medhash.io.dicom.walk_elements`); deflated or unknown transfer syntaxes are read through pydicom with their
    file meta, and so is whatever the walk is not sure about.
    """
    plain = _PLAIN_SYNTAXES.get(str(transfer_syntax))
    if plain is not None and plain[1]:
        key = _study_key_walked(raw, implicit=plain[0])
        if key is not None:
            return key
    if plain is None:
        ds = pydicom.dcmread(BytesIO(file_meta_bytes("1.2.3", "1.2.3", transfer_syntax) + raw),
                             stop_before_pixels=True, specific_tags=list(_STUDY_TAGS))
    else:
        from pydicom.filereader import read_dataset
        ds = read_dataset(BytesIO(raw), *plain, stop_when=lambda tag, vr, length: tag > _STUDY_TAGS[1],
                          defer_size=4096)
    return str(ds.get("StudyInstanceUID", "") or ds.get("FrameOfReferenceUID", "") or "").strip("\0 ")


def spooled_file_complete(path: Path) -> bool:
    """False when a spooled file is cut short: its data set does not end exactly after its last element
    (or it has no data set). What a power cut can leave when :func:`write_atomic` renamed the file before
    its fsync ended (such a file was never acknowledged): a prefix of whole 4 KiB blocks, which ends inside
    the pixel data or a sequence; only a cut falling exactly between two top-level elements of the header
    would pass, and ingest then reports that file. Files in a deflated or big-endian transfer syntax are
    not walked (True): ingest reads them and reports what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError:
        return False
    if len(raw) < 132 or raw[128:132] != b"DICM":
        return False
    meta: dict[int, bytes] = {}
    start = walk_elements(raw, 132, False, stop=0x0002FFFF, capture=(0x00020010,), found=meta)
    if start < 0 or start == len(raw):
        return False
    syntax = meta.get(0x00020010, b"").decode("ascii", "replace").strip("\0 ")
    plain = _PLAIN_SYNTAXES.get(syntax)
    if plain is None or not plain[1]:
        return True
    return walk_elements(raw, start, plain[0], stop=None) == len(raw)


def c_store_rsp_command(message_id: int, sop_class: str, sop_instance: str, status: int) -> bytes:
    """The command set of a C-STORE response without comment or offending element (PS3.7 9.3.1.2),
    implicit VR little endian: the bytes pynetdicom's encoder gives (about 0.35 ms a response here,
    paid once per file on the receiving path); this takes microseconds."""
    elements = ((0x0002, _uid(sop_class)), (0x0100, struct.pack("<H", 0x8001)),       # C-STORE-RSP
                (0x0120, struct.pack("<H", message_id)), (0x0800, struct.pack("<H", 0x0101)),  # no data set
                (0x0900, struct.pack("<H", status)), (0x1000, _uid(sop_instance)))
    body = b"".join(struct.pack("<HHI", 0x0000, elem, len(value)) + value for elem, value in elements)
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def _fast_c_store_rsp(assoc, primitive, context_id: int):
    """The P-DATA primitive of a plain C-STORE response (hand-encoded command set, one fragment), or
    None when pynetdicom's own encoding must be used: another message, a comment or offending element,
    a command too long for the peer's PDUs, or a handler of EVT_DIMSE_SENT other than pynetdicom's
    standard one (which logs nothing for a C-STORE response)."""
    from pynetdicom import _handlers, evt
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.pdu_primitives import P_DATA
    if type(primitive) is not C_STORE or primitive.MessageIDBeingRespondedTo is None \
            or primitive.Status is None or primitive.ErrorComment or primitive.OffendingElement \
            or primitive.AffectedSOPClassUID is None or primitive.AffectedSOPInstanceUID is None \
            or any(h[0] is not _handlers.standard_dimse_sent_handler for h in assoc.get_handlers(evt.EVT_DIMSE_SENT)):
        return None
    command = c_store_rsp_command(int(primitive.MessageIDBeingRespondedTo), str(primitive.AffectedSOPClassUID),
                                  str(primitive.AffectedSOPInstanceUID), int(primitive.Status))
    max_pdu = assoc.dimse.maximum_pdu_size
    if max_pdu and len(command) + 6 > max_pdu:  # PDV header: length (4), context id, control byte
        return None
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((context_id, b"\x03" + command))  # command, last fragment
    return pdata


DUL_LOOP_DELAY_S = 0.0002
"""How long pynetdicom's network thread of an association sleeps when it found nothing to do
(pynetdicom's default: 1 ms). Each C-STORE waits for that thread a few times (its PDUs, its response),
so the default caps one association at about 300 files/s here; 0.2 ms doubles that, for about 5 %
of a core per open association while it idles."""


def _reader(transport):
    """``AssociationSocket.recv`` for a connection that receives C-STOREs: the same result (``nr_bytes``
    bytes, or what came before the peer closed), read with ``recv_into`` in as few calls as the kernel
    allows. pynetdicom's reads 4096 bytes a call: 128 calls for a 512 x 512 CT slice."""
    def recv(nr_bytes: int) -> bytearray:
        sock = transport.socket
        data = bytearray(nr_bytes)
        got = 0
        with memoryview(data) as view:
            while got < nr_bytes:
                n = sock.recv_into(view[got:], nr_bytes - got)
                if not n:
                    break
                got += n
        if got < nr_bytes:
            del data[got:]
        return data
    return recv


def tune_connection(event) -> None:
    """EVT_CONN_OPEN handler of a connection that receives C-STOREs (``medhash listen``, and the C-MOVE
    and C-GET receivers of ``medhash pull``): TCP_NODELAY (without it, Nagle's algorithm and the peer's delayed
    ACK cost about 40 ms a C-STORE: 25 files/s at best), the shorter network-thread sleep, C-STORE
    responses sent with a hand-encoded command set (:func:`c_store_rsp_command`) and reads in large
    pieces (:func:`_reader`)."""
    try:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass
    if hasattr(event.assoc.dul, "_run_loop_delay"):  # a private attribute of pynetdicom 2 and 3
        event.assoc.dul._run_loop_delay = DUL_LOOP_DELAY_S
    transport = getattr(event.assoc.dul, "socket", None)
    if transport is not None and hasattr(transport, "socket") and hasattr(transport.socket, "recv_into"):
        transport.recv = _reader(transport)
    assoc, dimse = event.assoc, getattr(event.assoc, "dimse", None)
    send_msg = getattr(dimse, "send_msg", None)
    if send_msg is not None and hasattr(dimse, "dul"):
        def send(primitive, context_id: int) -> None:
            """pynetdicom's DIMSEServiceProvider.send_msg, with C-STORE responses encoded by hand."""
            pdata = _fast_c_store_rsp(assoc, primitive, context_id)
            if pdata is None:
                return send_msg(primitive, context_id)
            dimse.dul.send_pdu(pdata)
        dimse.send_msg = send


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
            from ..ingest.pseudonymise import as_pseudonymiser
            self.pseudonymiser = as_pseudonymiser(pseudonymise)  # a bad key fails here, before listening
        self.archive: Archive | None = None
        self.spool = self.archive_dir / SPOOL
        self._server = None
        self._rename_durable = False
        self._lock_fd: int | None = None
        self._cond = threading.Condition()
        self._assocs: dict[object, _Assoc] = {}
        self._ready: list[_Group] = []
        self._retry_at = 0.0
        self._last_activity = time.monotonic()
        self._flush = False
        self._stopping = False
        self._workers: list[threading.Thread] = []
        self._pool = None
        self._in_flight: set[str] = set()   # study keys being ingested
        self._inproc = threading.Lock()     # ingests in this process (no ingest process) take turns
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
        if path.is_dir() and not (path / CATALOG).is_file() and any(path.iterdir()):
            raise ArchiveError(f"{path}: not a medhash archive (no {CATALOG}) and not empty; give an archive "
                               "folder, or a new or empty folder to create one")
        return Archive(path, create=True)

    def start(self) -> "Listener":
        """Open the archive, take the spool, ingest what an earlier run left, and listen."""
        from pynetdicom import AE, evt

        self.archive = self._open_archive()
        try:
            self.spool.mkdir(exist_ok=True)
            self._lock_fd = os.open(self.spool / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ArchiveError(f"{self.archive_dir}: another `medhash listen` is receiving into this "
                                   "archive") from None
            self._rename_durable = filesystem_type(self.spool) in RENAME_DURABLE_WITH_FILE
            self._recover()
            ae = AE(ae_title=self.ae_title)
            ae.maximum_pdu_size = 0
            if self.allow_ae:
                ae.require_calling_aet = list(self.allow_ae)
            for uid in ACCEPTED_SOP_CLASSES:
                ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
            ae.add_supported_context(VERIFICATION)
            handlers = [(evt.EVT_CONN_OPEN, tune_connection), (evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, lambda event: STATUS_SUCCESS),
                        (evt.EVT_ACCEPTED, self._on_accepted), (evt.EVT_REJECTED, self._on_rejected),
                        (evt.EVT_RELEASED, self._on_end), (evt.EVT_ABORTED, self._on_end),
                        (evt.EVT_CONN_CLOSE, self._on_end)]
            self._start_workers()  # the ingest processes are up before the first association
            try:
                self._server = ae.start_server((self.host, self._port), block=False, evt_handlers=handlers)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise MedhashError(f"cannot listen on {self.host}:{self._port}: the port is in use (another "
                                       "listener or program); choose another with --port") from None
                raise MedhashError(f"cannot listen on {self.host}:{self._port}: {exc.strerror or exc}") from None
        except BaseException:
            self._shutdown_worker()
            self._release()
            raise
        log.info("listening as %s on %s:%d%s%s; spool %s, ingest after %g s quiet", self.ae_title, self.host,
                 self.port, f", calling AE titles {', '.join(self.allow_ae)} only" if self.allow_ae else "",
                 ", pseudonymising" if self.pseudonymiser else "", self.spool, self.quiet_s)
        return self

    def _recover(self) -> None:
        """Queue the spool folders an earlier (killed) run left; drop half-written files (never acknowledged)."""
        earlier = _Assoc("(earlier run)", "(earlier run)", "", ended=True)
        left = []
        cut_short = 0
        for folder in sorted(p for p in self.spool.iterdir() if p.is_dir() and p.name != FAILED):
            for part in folder.glob("*" + _PART):
                part.unlink()
            for path in folder.glob("*.dcm"):
                if not spooled_file_complete(path):  # a power cut between rename and fsync (write_atomic)
                    dest = self.spool / FAILED / folder.name
                    dest.mkdir(parents=True, exist_ok=True)
                    os.replace(path, dest / path.name)
                    with open(dest / "problems.txt", "a", encoding="utf-8") as fh:
                        fh.write(f"{path.name}: cut short (the data set does not end after its last element); "
                                 "not acknowledged if the listener stopped in a power cut; not ingested\n")
                    cut_short += 1
            files = sum(1 for f in folder.iterdir() if f.is_file())
            if files == 0:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            left.append(_Group(earlier, folder.name, folder, files=files))
        if cut_short:
            log.warning("spool: %d file(s) left cut short by an earlier run (not acknowledged, so the sender "
                        "sends them again) set aside in %s", cut_short, self.spool / FAILED)
        if left:
            earlier.files = sum(g.files for g in left)
            earlier.pending = len(left)
            log.info("spool: %d folder(s) with %d file(s) left by an earlier run; ingesting them first", len(left),
                     earlier.files)
            with self._cond:
                self._ready += left
                self._flush = True

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
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _release(self) -> None:
        if self.archive is not None:
            self.archive.close()
            self.archive = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def serve_forever(self) -> None:
        """Listen until Ctrl-C or SIGTERM (or :meth:`stop` from another thread), then stop cleanly."""
        if self._server is None:
            self.start()
        previous = None
        if threading.current_thread() is threading.main_thread():
            def _term(signum, frame):
                raise KeyboardInterrupt
            previous = signal.signal(signal.SIGTERM, _term)
        try:
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
            if self.pseudonymiser is None:
                # the bytes as received behind a file meta; only the header up to the study is parsed
                name = str(event.request.AffectedSOPInstanceUID)
                syntax = str(event.context.transfer_syntax)
                raw = event.request.DataSet.getvalue()
                chunks = (file_meta_bytes(sop_class, name, syntax), raw)
                study = read_study_key(raw, syntax)
            else:
                ds = event.dataset
                ds.file_meta = event.file_meta
                self.pseudonymiser.dataset(ds)
                buf = BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                chunks, name = (buf.getvalue(),), str(ds.SOPInstanceUID)
                study = str(ds.get("StudyInstanceUID", "") or ds.get("FrameOfReferenceUID", "") or "")
        except Exception as exc:
            a.errors.append(f"{event.request.AffectedSOPInstanceUID}: cannot decode ({type(exc).__name__}: {exc})")
            log.error("association %s: %s", a.id, a.errors[-1])
            return STATUS_CANNOT_UNDERSTAND
        with self._cond:  # only this association's thread adds to or closes its open groups
            g = a.open.get(study)
            if g is None:
                a.groups += 1
                a.pending += 1
                g = a.open[study] = _Group(a, study, self.spool / f"{a.id}.{a.groups}")
        try:
            if not g.folder.exists():
                g.folder.mkdir(parents=True)
                fsync_dir(self.spool)
            write_atomic(g.folder / f"{_safe_name(name)}.dcm", *chunks, rename_durable_with_file=self._rename_durable)
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
        if self._flush or self._stopping:
            self._flush = False
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
        """Start the ingest processes (reading series is CPU-bound and would otherwise take the GIL from
        the threads receiving) and one thread per process that hands it studies."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, wait
        try:
            self._pool = ProcessPoolExecutor(INGEST_PROCESSES, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_child_start, initargs=(str(self.archive_dir),))
            wait([self._pool.submit(int) for _ in range(INGEST_PROCESSES)])  # started now, not at the first study
        except Exception as exc:  # pragma: no cover - then in this process
            log.debug("no ingest process (%s); ingesting in the listener process", exc)
            self._pool = None
        for k in range(INGEST_PROCESSES if self._pool is not None else 1):
            worker = threading.Thread(target=self._work_loop, name=f"medhash-listen-ingest-{k}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _run_ingest(self, folders: list[Path]):
        from ..ingest.pipeline import ingest
        pool = self._pool
        if pool is not None:
            from concurrent.futures.process import BrokenProcessPool
            try:
                return pool.submit(_child_ingest, str(self.archive_dir), [str(f) for f in folders]).result()
            except BrokenProcessPool:
                log.warning("an ingest process died; ingesting in the listener process from now on")
                self._pool = None
        with self._inproc:
            return ingest(self.archive, folders)

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
            report = self._run_ingest(folders)
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
        by_folder = {str(g.folder): g for g in batch}
        for p in problems:
            path = Path(p.path)
            a = by_folder.get(str(path.parent))
            log.error("%s: %s", p.path, p.message)
            if a is None or not path.is_file():
                continue
            dest = self.spool / FAILED / a.folder.name
            dest.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest / path.name)
            with open(dest / "problems.txt", "a", encoding="utf-8") as fh:
                fh.write(f"{path.name}: {p.message}\n")
            moved.append(str(dest / path.name))
        return moved

    def _log_association(self, a: _Assoc) -> None:
        """The association's one log line, once it has ended and all its studies are ingested."""
        self.stats["errors"] += len(a.errors)
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(a.kinds.items()))
        head = (f"association {a.id} from {a.calling_ae}" + (f" ({a.peer})" if a.peer else "")
                + f": {a.files} file(s) received" + (f" ({kinds})" if kinds else ""))
        if a.files:
            head += f", {a.series} series ingested ({a.slices} slices)"
            if a.existing:
                head += f", {a.existing} already in the archive"
        errors = len(a.errors) + a.problems
        head += f", {errors} error(s)"
        if a.failed:
            head += f" (files set aside in {self.spool / FAILED}/: {', '.join(sorted(a.failed))})"
        (log.warning if errors else log.info)(head)
