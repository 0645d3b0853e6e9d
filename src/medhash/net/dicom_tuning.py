"""Everything that reproduces or patches pynetdicom on the receiving path, and nothing else.

Receiving a file costs, per C-STORE: pynetdicom's handling (about 2.5 ms here), the File Meta
Information (:func:`file_meta_bytes`: pydicom's writer takes about 1 ms, this microseconds), the
C-STORE response (:func:`c_store_rsp_command`: pynetdicom's encoder takes about 0.35 ms) and the
socket reads (:func:`_reader`: pynetdicom reads 4096 bytes a call). :func:`tune_connection`, the
EVT_CONN_OPEN handler of every connection that receives C-STOREs (``medhash listen`` and the C-MOVE
and C-GET receivers of ``medhash pull``), installs the faster pieces on the connection's objects. It
is the only code in medhash that touches pynetdicom's private attributes; each such use falls back
to pynetdicom's own code when the attribute is not there.
"""
from __future__ import annotations

import socket
import struct

DUL_LOOP_DELAY_S = 0.0002
"""How long pynetdicom's network thread of an association sleeps when it found nothing to do
(pynetdicom's default: 1 ms). Each C-STORE waits for that thread a few times (its PDUs, its response),
so the default caps one association at about 300 files/s here; 0.2 ms doubles that, for about 5 %
of a core per open association while it idles."""


def _element(group_elem: int, vr: bytes, value: bytes) -> bytes:
    """One explicit-VR little-endian data element (the File Meta Information's encoding)."""
    tag = struct.pack("<HH", group_elem >> 16, group_elem & 0xFFFF)
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return tag + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def _uid(value: str) -> bytes:
    """A UID's value bytes, padded with a NUL to an even length."""
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def file_meta_bytes(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information of a received data set: the same elements as
    ``pynetdicom.dsutils.create_file_meta`` (what ``event.encoded_dataset`` writes), encoded directly.

    pydicom's writer takes about 1 ms a file for these seven elements; this takes microseconds, which
    matters on the receiving path, where every millisecond is paid once per C-STORE.
    """
    # optional dependency: pynetdicom only where DICOM is received
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
    # optional dependency: pynetdicom only where DICOM is received
    from pynetdicom import _handlers, evt
    from pynetdicom.dimse_primitives import C_STORE  # pynetdicom: only once a connection is tuned
    from pynetdicom.pdu_primitives import P_DATA  # (as above)
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


def _fast_send(assoc, dimse, send_msg):
    """``DIMSEServiceProvider.send_msg`` of ``dimse`` with C-STORE responses encoded by hand
    (:func:`_fast_c_store_rsp`); every other message goes to pynetdicom's ``send_msg``."""
    def send(primitive, context_id: int) -> None:
        """pynetdicom's DIMSEServiceProvider.send_msg, with C-STORE responses encoded by hand."""
        pdata = _fast_c_store_rsp(assoc, primitive, context_id)
        if pdata is None:
            return send_msg(primitive, context_id)
        dimse.dul.send_pdu(pdata)
    return send


def tune_connection(event) -> None:
    """EVT_CONN_OPEN handler of a connection that receives C-STOREs (``medhash listen``, and the C-MOVE
    and C-GET receivers of ``medhash pull``): TCP_NODELAY (without it, Nagle's algorithm and the peer's delayed
    ACK cost about 40 ms a C-STORE: 25 files/s at best), the shorter network-thread sleep
    (:data:`DUL_LOOP_DELAY_S`), C-STORE responses sent with a hand-encoded command set
    (:func:`c_store_rsp_command`) and reads in large pieces (:func:`_reader`)."""
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
        dimse.send_msg = _fast_send(assoc, dimse, send_msg)
