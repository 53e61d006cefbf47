"""Sans-IO ttrpc framing: bytes in, frames out; frames in, bytes out.  No trio, no sockets.

Rules:
- ``FrameDecoder.feed(data)`` buffers input (``feed(b"")`` means end of stream); ``next_frame()`` returns one
  Frame, an OversizedFrame event, NEED_DATA or CLOSED.  The caller drains ``next_frame()`` until NEED_DATA before
  feeding again, so the buffer never holds more than one frame plus one read.
- The 4 MiB limit is checked from the header, before anything is buffered.  An oversized frame's data is discarded:
  exactly ``length`` bytes are skipped, however they arrive, without buffering them; once the last one is skipped the
  decoder reports OversizedFrame (as Go's channel.recv does after Discard), and decoding continues with the next
  frame.  The caller answers RESOURCE_EXHAUSTED on that stream id (server) or fails that call (client); the
  connection stays open.
- The only exception ``next_frame()`` raises is RemoteProtocolError: end of stream in the middle of a frame (or of an
  oversized frame being skipped).  Every other byte sequence is valid framing.
- ``encode_frame`` refuses (LocalProtocolError, RESOURCE_EXHAUSTED) to produce a frame over the limit.
"""

from __future__ import annotations

import dataclasses
import enum
import struct

from ttrpc.frame import HEADER_LENGTH, HEADER_STRUCT, MAX_DATA_LENGTH, Frame
from ttrpc.status import Code, LocalProtocolError, RemoteProtocolError

__all__ = ["CLOSED", "NEED_DATA", "FrameDecoder", "OversizedFrame", "Signal", "encode", "encode_frame",
           "oversize_message"]


class Signal(enum.Enum):
    NEED_DATA = "NEED_DATA"  # feed more bytes, then ask again
    CLOSED = "CLOSED"  # end of stream at a frame boundary


NEED_DATA = Signal.NEED_DATA
CLOSED = Signal.CLOSED


def oversize_message(length: int, limit: int = MAX_DATA_LENGTH) -> str:
    """The status message Go's ttrpc uses for an oversized frame."""
    return f"message length {length} exceed maximum message size of {limit}"


@dataclasses.dataclass(frozen=True, slots=True)
class OversizedFrame:
    """A frame whose announced data length exceeded the limit; its data has been discarded."""

    stream_id: int
    type: int
    flags: int
    length: int
    limit: int = MAX_DATA_LENGTH

    @property
    def message(self) -> str:
        return oversize_message(self.length, self.limit)


class FrameDecoder:
    """Incremental frame parser (see the module rules)."""

    __slots__ = ("_buf", "_eof", "_max", "_skip", "_oversized")

    def __init__(self, max_data_length: int = MAX_DATA_LENGTH) -> None:
        self._buf = bytearray()
        self._eof = False
        self._max = max_data_length
        self._skip = 0  # bytes of an oversized frame still to discard
        self._oversized: OversizedFrame | None = None  # reported once the skip is complete

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    @property
    def eof(self) -> bool:
        return self._eof

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes; empty ``data`` marks the end of the stream."""
        if self._eof:
            raise LocalProtocolError("ttrpc: data fed to the decoder after end of stream")
        if not data:
            self._eof = True
            return
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            if n == len(data):
                return
            data = memoryview(data)[n:]
        self._buf += data

    def next_frame(self) -> Frame | OversizedFrame | Signal:
        if self._skip == 0 and self._oversized is not None:
            event, self._oversized = self._oversized, None
            return event
        buf = self._buf
        have = len(buf)
        if self._skip == 0 and have >= HEADER_LENGTH:
            length, stream_id, type_, flags = HEADER_STRUCT.unpack_from(buf)
            end = HEADER_LENGTH + length
            if length > self._max:
                event = OversizedFrame(stream_id, type_, flags, length, self._max)
                take = min(have, end)
                del buf[:take]
                self._skip = end - take
                if self._skip == 0:
                    return event
                self._oversized = event
            elif have >= end:
                with memoryview(buf) as view:
                    data = bytes(view[HEADER_LENGTH:end])
                del buf[:end]
                return Frame(stream_id, type_, flags, data)
        if not self._eof:
            return NEED_DATA
        if self._buf or self._skip:
            raise RemoteProtocolError(
                f"ttrpc: connection closed inside a frame ({len(self._buf)} bytes buffered, "
                f"{self._skip} bytes of an oversized frame not received)"
            )
        return CLOSED


def encode_frame(
    stream_id: int, type: int, data: bytes, flags: int = 0, max_data_length: int = MAX_DATA_LENGTH
) -> bytes:
    """Header plus data as one bytes object; LocalProtocolError(RESOURCE_EXHAUSTED) above the limit."""
    if len(data) > max_data_length:
        raise LocalProtocolError(oversize_message(len(data), max_data_length), Code.RESOURCE_EXHAUSTED)
    try:
        return HEADER_STRUCT.pack(len(data), stream_id, type, flags) + data
    except struct.error as exc:  # a field does not fit its width
        raise LocalProtocolError(f"ttrpc: cannot encode frame header: {exc}") from None


def encode(frame: Frame, max_data_length: int = MAX_DATA_LENGTH) -> bytes:
    """Encode a Frame object (tests and tools; the connections call encode_frame directly)."""
    return encode_frame(frame.stream_id, frame.type, frame.data, frame.flags, max_data_length)
