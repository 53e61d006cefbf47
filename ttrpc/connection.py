"""Sans-IO ttrpc call state for one connection: which stream ids are open, what to answer, what to drop.

Rules (no trio, no sockets; bytes in via ``receive_data``, events out via ``next_event``, bytes out from ``send_*``):
- Unary calls only.  A client sends only Request frames (flags 0); it never sends Data frames (a Data frame kills
  a ttrpc 1.2 server: ``services.go`` at ttrpc v1.2.7).
- ServerConnection, per frame, in this order (ttrpc 1.2 order: the id check comes first):
  * oversized frame (any type)        -> Rejected RESOURCE_EXHAUSTED "message length N exceed maximum ..."
  * Request or Data on an even id     -> Rejected INVALID_ARGUMENT "StreamID must be odd for client initiated streams"
  * Request that does not decode      -> Rejected INVALID_ARGUMENT "unmarshal request error: ..."
  * Request id not above the last one -> Rejected INVALID_ARGUMENT "StreamID cannot be re-used and must increment"
  * Request                           -> RequestReceived; the stream stays open until send_response
  * Data frame                        -> Rejected INVALID_ARGUMENT; if it names an open call, that call is closed
                                         by the rejection and its handler's response is dropped later
  * any other type                    -> ignored (forward compatibility, as Go does)
  Every stream gets exactly one Response.  Request flags are ignored.
- ClientConnection: ids are odd and strictly increasing from 1.  A response is matched by id; one for an id nobody
  waits for (the caller gave up) is logged and dropped.  Errors that belong to one call (oversized response, a
  non-Response frame on the call, an undecodable envelope) become that call's ResponseReceived with an error code;
  the connection goes on.
- Only RemoteProtocolError comes out of ``next_event`` (stream ended inside a frame); after it the connection is
  finished.  Success responses carry no status (as Go sends them); error responses carry no payload.
- A response over 4 MiB is never produced: it is replaced by RESOURCE_EXHAUSTED on the same stream.  So that the
  replacement itself always fits, a ServerConnection's limit is at least MIN_DATA_LENGTH (ValueError below).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

from google.protobuf.message import DecodeError

from protos import status_pb2, ttrpc_pb2
from ttrpc.codec import FrameDecoder, OversizedFrame, Signal, encode_frame, oversize_message
from ttrpc.frame import MAX_DATA_LENGTH, MAX_STREAM_ID, Frame, MessageType
from ttrpc import wire
from ttrpc.status import Code, LocalProtocolError

__all__ = ["ClientConnection", "Rejected", "RequestReceived", "ResponseReceived", "ServerConnection",
           "encode_response_data"]

log = logging.getLogger(__name__)

_REQUEST = MessageType.REQUEST
_RESPONSE = MessageType.RESPONSE
_DATA = MessageType.DATA

MSG_ODD = "StreamID must be odd for client initiated streams"
MSG_REUSED = "StreamID cannot be re-used and must increment"
MSG_INACTIVE = "StreamID is no longer active"
MSG_DATA_ON_UNARY = "ttrpc: data frames are not accepted on unary calls"

# The RESOURCE_EXHAUSTED answer that replaces an oversized one is at most ~90 bytes (lengths of 20 digits).
MIN_DATA_LENGTH = 128


@dataclasses.dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new unary call; answer it once with ServerConnection.send_response."""

    stream_id: int
    request: ttrpc_pb2.Request
    flags: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    """A frame the server answers itself; send ServerConnection.encode_rejection(event)."""

    stream_id: int
    code: Code
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The outcome of one client call: ``code`` OK with ``payload``, or an error code and message."""

    stream_id: int
    payload: bytes
    code: Code = Code.OK
    message: str = ""


def encode_response_data(payload: bytes, code: Code = Code.OK, message: str = "") -> bytes:
    """Serialize a ttrpc Response: ``{2: payload}`` on success (no status, as Go), ``{1: status}`` on error."""
    if code == Code.OK:
        if not payload:
            return b""
        return wire.message_field(2, payload)  # field 2 (payload), written by hand: no protobuf object
    status = status_pb2.Status(code=int(code), message=message)
    return ttrpc_pb2.Response(status=status).SerializeToString()


def _response_frame(stream_id: int, data: bytes, limit: int) -> bytes:
    if len(data) > limit:
        log.warning("ttrpc: response on stream %d is %d bytes, over the limit; answering RESOURCE_EXHAUSTED",
                    stream_id, len(data))
        data = encode_response_data(b"", Code.RESOURCE_EXHAUSTED, oversize_message(len(data), limit))
    return encode_frame(stream_id, _RESPONSE, data, 0, limit)


class ServerConnection:
    """Server side of one connection (see the module rules)."""

    def __init__(self, max_data_length: int = MAX_DATA_LENGTH) -> None:
        if max_data_length < MIN_DATA_LENGTH:
            raise ValueError(f"max_data_length {max_data_length} is below {MIN_DATA_LENGTH}: the server's own "
                             f"RESOURCE_EXHAUSTED answer would not fit")
        self._decoder = FrameDecoder(max_data_length)
        self._max = max_data_length
        self._last_id = 0
        self._open: set[int] = set()  # stream ids that still owe their Response

    @property
    def open_streams(self) -> frozenset[int]:
        return frozenset(self._open)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes from the peer; ``b""`` means the peer closed its side."""
        self._decoder.feed(data)

    def next_event(self) -> RequestReceived | Rejected | Signal:
        while True:
            item = self._decoder.next_frame()
            if type(item) is Frame:
                event = self._on_frame(item)
                if event is not None:
                    return event
            elif type(item) is OversizedFrame:
                self._open.discard(item.stream_id)
                return Rejected(item.stream_id, Code.RESOURCE_EXHAUSTED, item.message)
            else:
                return item  # NEED_DATA or CLOSED

    def _on_frame(self, frame: Frame) -> RequestReceived | Rejected | None:
        sid = frame.stream_id
        if frame.type == _REQUEST:
            if sid & 1 == 0:
                return Rejected(sid, Code.INVALID_ARGUMENT, MSG_ODD)
            try:
                request = ttrpc_pb2.Request.FromString(frame.data)
            except DecodeError as exc:
                return Rejected(sid, Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}")
            if sid <= self._last_id:
                return Rejected(sid, Code.INVALID_ARGUMENT, MSG_REUSED)
            self._last_id = sid
            self._open.add(sid)
            return RequestReceived(sid, request, frame.flags)
        if frame.type == _DATA:
            if sid & 1 == 0:
                return Rejected(sid, Code.INVALID_ARGUMENT, MSG_ODD)
            if sid in self._open:
                self._open.discard(sid)
                return Rejected(sid, Code.INVALID_ARGUMENT, MSG_DATA_ON_UNARY)
            return Rejected(sid, Code.INVALID_ARGUMENT, MSG_INACTIVE)
        log.debug("ttrpc: ignoring frame of unknown type %d on stream %d", frame.type, sid)
        return None

    def send_response(self, stream_id: int, payload: bytes = b"", code: Code = Code.OK,
                      message: str = "") -> bytes | None:
        """Bytes answering an open call, or None if that stream was already answered (dropped, logged)."""
        try:
            self._open.remove(stream_id)
        except KeyError:
            log.info("ttrpc: dropping response for stream %d, which is no longer open", stream_id)
            return None
        return _response_frame(stream_id, encode_response_data(payload, code, message), self._max)

    def encode_rejection(self, event: Rejected) -> bytes:
        """Bytes of the error Response that answers a Rejected event."""
        return _response_frame(event.stream_id, encode_response_data(b"", event.code, event.message), self._max)


class ClientConnection:
    """Client side of one connection (see the module rules)."""

    def __init__(self, max_data_length: int = MAX_DATA_LENGTH) -> None:
        self._decoder = FrameDecoder(max_data_length)
        self._max = max_data_length
        self._next_id = 1
        self._pending: set[int] = set()

    @property
    def pending(self) -> frozenset[int]:
        return frozenset(self._pending)

    def send_request(self, service: str, method: str, payload: bytes, *, timeout_nano: int = 0,
                     metadata: Iterable[tuple[str, str]] = ()) -> tuple[int, bytes]:
        """Open a call: returns its stream id and the frame to write.

        Raises LocalProtocolError RESOURCE_EXHAUSTED (nothing sent, no id used) when the request exceeds the limit.
        """
        request = ttrpc_pb2.Request(service=service, method=method, payload=payload, timeout_nano=timeout_nano)
        for key, value in metadata:
            request.metadata.add(key=key.lower(), value=value)
        data = request.SerializeToString()
        if len(data) > self._max:
            raise LocalProtocolError(oversize_message(len(data), self._max), Code.RESOURCE_EXHAUSTED)
        sid = self._next_id
        if sid > MAX_STREAM_ID:
            raise LocalProtocolError("ttrpc: stream ids exhausted on this connection", Code.UNAVAILABLE)
        self._next_id = sid + 2
        self._pending.add(sid)
        return sid, encode_frame(sid, _REQUEST, data, 0, self._max)

    def forget(self, stream_id: int) -> None:
        """The caller stopped waiting; a late response for this id will be dropped."""
        self._pending.discard(stream_id)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes from the peer; ``b""`` means the peer closed its side."""
        self._decoder.feed(data)

    def next_event(self) -> ResponseReceived | Signal:
        while True:
            item = self._decoder.next_frame()
            if type(item) is Frame:
                event = self._on_frame(item)
            elif type(item) is OversizedFrame:
                event = self._settle(item.stream_id, Code.RESOURCE_EXHAUSTED, item.message)
            else:
                return item  # NEED_DATA or CLOSED
            if event is not None:
                return event

    def _settle(self, sid: int, code: Code, message: str, payload: bytes = b"") -> ResponseReceived | None:
        try:
            self._pending.remove(sid)
        except KeyError:
            log.warning("ttrpc: received message on inactive stream %d (%s)", sid, code.name)
            return None
        return ResponseReceived(sid, payload, code, message)

    def _on_frame(self, frame: Frame) -> ResponseReceived | None:
        sid = frame.stream_id
        if frame.type != _RESPONSE:
            return self._settle(sid, Code.INTERNAL, f"ttrpc: unexpected message type {frame.type} on a unary call")
        try:
            response = ttrpc_pb2.Response.FromString(frame.data)
        except DecodeError as exc:
            return self._settle(sid, Code.INTERNAL, f"ttrpc: error unmarshalling response: {exc}")
        if response.HasField("status") and response.status.code != Code.OK:
            return self._settle(sid, Code.from_wire(response.status.code), response.status.message)
        return self._settle(sid, Code.OK, "", response.payload)

    def close(self) -> list[int]:
        """The connection ended: returns the ids still pending (each fails with ConnectionClosed) and forgets them."""
        ids = sorted(self._pending)
        self._pending.clear()
        return ids
