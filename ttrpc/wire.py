"""A tiny protobuf wire-format encoder/decoder for the short-lived shim actions.

Rules:
- Pure Python with no dependencies: ``start``, ``delete``, ``-info`` and ``-v`` must not load the protobuf
  runtime or generated modules (containerd waits for these processes; see shim/commands/run.py).
- Proto3 semantics on encode: the ``*_field`` helpers omit zero/empty scalars, exactly like Go's
  ``proto.Marshal``; ``message_field`` always emits (a set sub-message, even an empty one, is present).
- Decoding is strict about framing (truncated varints, lengths past the end, unknown wire types and field
  number 0 raise ``WireError``) and tolerant about content: unknown fields are skipped, a repeated scalar
  field is decoded as its last occurrence, as protobuf does.
- Only wire types 0 (varint), 1 (fixed64), 2 (length-delimited) and 5 (fixed32) exist; groups (3, 4) are
  rejected.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, nor collections
if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["FIXED32", "FIXED64", "LEN", "VARINT", "WireError", "any_message", "bytes_field", "decode_any", "fields",
           "get_bytes", "get_string", "get_uint", "iter_fields", "message_field", "read_varint", "string_field", "tag",
           "timestamp", "timestamp_ns", "uint_field", "varint"]

VARINT = 0
FIXED64 = 1
LEN = 2
FIXED32 = 5

_MASK64 = (1 << 64) - 1


class WireError(ValueError):
    """Malformed protobuf input."""


# -- encoding -------------------------------------------------------------------------------------------

def varint(value: int) -> bytes:
    """Encode an integer as a base-128 varint; negative values use 64-bit two's complement (10 bytes)."""
    if value < 0:
        value &= _MASK64
    elif value > _MASK64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    if not 1 <= number < (1 << 29):
        raise ValueError(f"invalid field number {number}")
    return varint((number << 3) | wire_type)


def uint_field(number: int, value: int) -> bytes:
    """uint32/uint64/int32/int64/bool/enum field; omitted when zero."""
    if not value:
        return b""
    return tag(number, VARINT) + varint(int(value))


def bytes_field(number: int, value: bytes) -> bytes:
    """bytes field; omitted when empty."""
    if not value:
        return b""
    return tag(number, LEN) + varint(len(value)) + value


def string_field(number: int, value: str) -> bytes:
    """string field; omitted when empty."""
    return bytes_field(number, value.encode("utf-8"))


def message_field(number: int, encoded: bytes) -> bytes:
    """Embedded message field; always present, even when the message encodes to zero bytes."""
    return tag(number, LEN) + varint(len(encoded)) + encoded


def timestamp(seconds: int, nanos: int) -> bytes:
    """google.protobuf.Timestamp {1 seconds int64, 2 nanos int32}."""
    if not 0 <= nanos < 1_000_000_000:
        raise ValueError(f"nanos out of range: {nanos}")
    return uint_field(1, seconds) + uint_field(2, nanos)


def timestamp_ns(ns: int) -> bytes:
    """Timestamp from nanoseconds since the Unix epoch (e.g. ``time.time_ns()``)."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return timestamp(seconds, nanos)


def any_message(type_url: str, value: bytes) -> bytes:
    """google.protobuf.Any {1 type_url string, 2 value bytes}."""
    return string_field(1, type_url) + bytes_field(2, value)


# -- decoding -------------------------------------------------------------------------------------------

def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; return (value, next position). At most 10 bytes, value kept to 64 bits."""
    result = 0
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _MASK64, pos
        shift += 7


def iter_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value): an int for varint/fixed fields, bytes for length-delimited."""
    view = memoryview(data)
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = read_varint(view, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire_type == VARINT:
            value, pos = read_varint(view, pos)
            yield number, wire_type, value
        elif wire_type == LEN:
            length, pos = read_varint(view, pos)
            if length > end - pos:
                raise WireError(f"field {number}: length {length} past the end")
            yield number, wire_type, bytes(view[pos:pos + length])
            pos += length
        elif wire_type in (FIXED64, FIXED32):
            size = 8 if wire_type == FIXED64 else 4
            if size > end - pos:
                raise WireError(f"field {number}: truncated fixed{size * 8}")
            yield number, wire_type, int.from_bytes(view[pos:pos + size], "little")
            pos += size
        else:
            raise WireError(f"field {number}: unsupported wire type {wire_type}")


def fields(data: bytes) -> dict[int, int | bytes]:
    """Decode a whole message to {field number: last value}; framing errors raise WireError."""
    return {number: value for number, _, value in iter_fields(data)}


def get_bytes(decoded: dict[int, int | bytes], number: int) -> bytes:
    value = decoded.get(number, b"")
    if not isinstance(value, bytes):
        raise WireError(f"field {number}: expected a length-delimited value")
    return value


def get_string(decoded: dict[int, int | bytes], number: int) -> str:
    try:
        return get_bytes(decoded, number).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"field {number}: invalid UTF-8") from exc


def get_uint(decoded: dict[int, int | bytes], number: int) -> int:
    value = decoded.get(number, 0)
    if not isinstance(value, int):
        raise WireError(f"field {number}: expected a varint")
    return value


def decode_any(data: bytes) -> tuple[str, bytes]:
    """Decode a serialized google.protobuf.Any into (type_url, value)."""
    decoded = fields(data)
    return get_string(decoded, 1), get_bytes(decoded, 2)
