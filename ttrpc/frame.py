"""ttrpc frames: the 10-byte header and the message types and flags that go in it.

Rules:
- Wire layout (big-endian): data length u32, stream id u32, type u8, flags u8, then ``length`` data bytes.
  The length counts the data only.  Data longer than MAX_DATA_LENGTH (4 MiB) is never sent and never buffered.
- This module only describes frames; buffering and the 4 MiB policy live in codec.py.
- ``Frame.type`` and ``Frame.flags`` are plain ints so that unknown types and flags survive decoding (the
  connection layer decides to ignore them); compare them with MessageType / Flags members.
"""

from __future__ import annotations

import dataclasses
import enum
import struct

__all__ = ["HEADER_LENGTH", "MAX_DATA_LENGTH", "MAX_STREAM_ID", "Flags", "Frame", "Header", "MessageType",
           "decode_header", "encode_header"]

HEADER_LENGTH = 10
MAX_DATA_LENGTH = 4 << 20  # messageLengthMax in Go's channel.go
MAX_STREAM_ID = (1 << 32) - 1

HEADER_STRUCT = struct.Struct(">IIBB")  # length, stream id, type, flags


class MessageType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3  # ttrpc 1.2 streaming; never sent by this library


class Flags(enum.IntFlag):
    REMOTE_CLOSED = 0x01
    REMOTE_OPEN = 0x02
    NO_DATA = 0x04


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    length: int
    stream_id: int
    type: int
    flags: int


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    data: bytes


def encode_header(length: int, stream_id: int, type: int, flags: int = 0) -> bytes:
    """Pack a header; raises ValueError (struct.error) when a field does not fit its width."""
    try:
        return HEADER_STRUCT.pack(length, stream_id, type, flags)
    except struct.error as exc:
        raise ValueError(f"ttrpc header field out of range: {exc}") from None


def decode_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> Header:
    """Unpack the header at ``offset``; ``buf`` must hold at least HEADER_LENGTH bytes from there."""
    return Header(*HEADER_STRUCT.unpack_from(buf, offset))

