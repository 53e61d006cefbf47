"""Properties and edge cases of the sans-IO frame codec (ttrpc/frame.py, ttrpc/codec.py).

Rules: inputs are fed whole, split at every/any offset and byte by byte; the decoder may only return frames,
OversizedFrame events, NEED_DATA, CLOSED, or raise RemoteProtocolError.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttrpc.codec import (
    CLOSED,
    NEED_DATA,
    FrameDecoder,
    OversizedFrame,
    encode,
    encode_frame,
    oversize_message,
)
from ttrpc.frame import HEADER_LENGTH, MAX_DATA_LENGTH, Frame, Header, decode_header, encode_header
from ttrpc.status import Code, LocalProtocolError, RemoteProtocolError

frames = st.builds(
    Frame,
    stream_id=st.integers(0, 2**32 - 1),
    type=st.integers(0, 255),
    flags=st.integers(0, 255),
    data=st.binary(max_size=64),
)


def split(blob: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(blob) + 1) for c in cuts})
    pieces, start = [], 0
    for p in points + [len(blob)]:
        pieces.append(blob[start:p])
        start = p
    return [p for p in pieces if p]


def drain(dec: FrameDecoder) -> list[object]:
    out = []
    while (item := dec.next_frame()) is not NEED_DATA and item is not CLOSED:
        out.append(item)
    return out


def decode_all(pieces: list[bytes], max_data_length: int = MAX_DATA_LENGTH) -> list[object]:
    dec = FrameDecoder(max_data_length)
    out: list[object] = []
    for piece in pieces:
        dec.feed(piece)
        out += drain(dec)
    dec.feed(b"")
    out += drain(dec)
    assert dec.next_frame() is CLOSED
    return out


def test_header_layout_is_big_endian() -> None:
    assert encode_header(0x58, 1, 1, 0) == bytes.fromhex("00000058 00000001 01 00")
    assert decode_header(bytes.fromhex("01020304 a0b0c0d0 02 07")) == Header(0x01020304, 0xA0B0C0D0, 2, 7)
    with pytest.raises(ValueError):
        encode_header(2**32, 1, 1)
    with pytest.raises(ValueError):
        encode_header(0, 1, 256)


@given(st.lists(frames, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_frames_split_anywhere_decode_to_the_same_frames(fs: list[Frame], cuts: list[int]) -> None:
    blob = b"".join(encode(f) for f in fs)
    assert decode_all(split(blob, cuts)) == fs


@given(st.lists(frames, min_size=1, max_size=3))
def test_frames_fed_byte_by_byte(fs: list[Frame]) -> None:
    blob = b"".join(encode(f) for f in fs)
    assert decode_all([blob[i:i + 1] for i in range(len(blob))]) == fs


@settings(max_examples=300)
@given(st.binary(max_size=200), st.lists(st.integers(0, 300), max_size=10), st.sampled_from([8, 64, MAX_DATA_LENGTH]))
def test_garbage_yields_frames_or_remote_protocol_error(blob: bytes, cuts: list[int], limit: int) -> None:
    dec = FrameDecoder(limit)
    try:
        for piece in split(blob, cuts) + [b""]:
            dec.feed(piece)
            while (item := dec.next_frame()) is not NEED_DATA:
                if item is CLOSED:
                    return
                assert isinstance(item, (Frame, OversizedFrame))
                if isinstance(item, Frame):
                    assert len(item.data) <= limit
    except RemoteProtocolError:
        assert dec.eof  # only a truncated frame at end of stream is an error
        return


oversized = st.builds(
    lambda sid, t, fl, extra: (sid, t, fl, extra),
    st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 255), st.integers(1, 40),
)


@given(st.lists(st.one_of(frames.map(lambda f: ("ok", f)), oversized.map(lambda o: ("big", o))), max_size=8),
       st.lists(st.integers(0, 10_000), max_size=16))
def test_oversized_frames_split_anywhere_are_skipped_exactly(items: list[tuple[str, object]], cuts: list[int]) -> None:
    limit = 16
    blob, expected = b"", []
    for kind, item in items:
        if kind == "ok":
            assert isinstance(item, Frame)
            f = Frame(item.stream_id, item.type, item.flags, item.data[:limit])
            blob += encode(f, limit)
            expected.append(f)
        else:
            sid, t, fl, extra = item  # type: ignore[misc]
            length = limit + extra
            blob += encode_header(length, sid, t, fl) + bytes([0xAA]) * length
            expected.append(OversizedFrame(sid, t, fl, length, limit))
    assert decode_all(split(blob, cuts), limit) == expected


def test_real_oversized_frame_is_discarded_without_buffering() -> None:
    length = MAX_DATA_LENGTH + 1
    blob = encode_header(length, 7, 1) + b"\x00" * length + encode_frame(9, 1, b"next")
    dec = FrameDecoder()
    events = []
    chunk = 65536
    for i in range(0, len(blob), chunk):
        dec.feed(blob[i:i + chunk])
        assert dec.buffered <= chunk
        events += drain(dec)
    assert events == [OversizedFrame(7, 1, 0, length), Frame(9, 1, 0, b"next")]
    assert events[0].message == "message length 4194305 exceed maximum message size of 4194304"


def test_oversize_event_waits_until_every_byte_is_skipped() -> None:
    dec = FrameDecoder(4)
    dec.feed(encode_header(6, 3, 1) + b"12345")
    assert dec.next_frame() is NEED_DATA
    dec.feed(b"6")
    assert dec.next_frame() == OversizedFrame(3, 1, 0, 6, 4)
    assert dec.next_frame() is NEED_DATA


@pytest.mark.parametrize("blob", [b"\x00", encode_header(5, 1, 1), encode_header(5, 1, 1) + b"abcd",
                                  encode_header(MAX_DATA_LENGTH + 1, 1, 1) + b"xx"])
def test_end_of_stream_inside_a_frame_is_a_remote_protocol_error(blob: bytes) -> None:
    dec = FrameDecoder()
    dec.feed(blob)
    assert dec.next_frame() is NEED_DATA
    dec.feed(b"")
    with pytest.raises(RemoteProtocolError, match="connection closed inside a frame"):
        dec.next_frame()


def test_feeding_after_end_of_stream_is_a_local_error() -> None:
    dec = FrameDecoder()
    dec.feed(b"")
    assert dec.next_frame() is CLOSED
    with pytest.raises(LocalProtocolError):
        dec.feed(b"x")


def test_zero_length_frame_and_exact_limit() -> None:
    assert encode_frame(5, 2, b"") == bytes.fromhex("00000000 00000005 02 00")
    big = b"\x01" * MAX_DATA_LENGTH
    dec = FrameDecoder()
    dec.feed(encode_frame(1, 1, big))
    assert dec.next_frame() == Frame(1, 1, 0, big)


def test_encoder_refuses_oversized_data() -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_frame(1, 1, b"\x00" * (MAX_DATA_LENGTH + 1))
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    assert info.value.message == oversize_message(MAX_DATA_LENGTH + 1)
    with pytest.raises(LocalProtocolError):
        encode_frame(2**32, 1, b"")


def test_decoded_data_is_immutable_bytes() -> None:
    dec = FrameDecoder()
    dec.feed(bytearray(encode_frame(1, 1, b"abc")))
    item = dec.next_frame()
    assert isinstance(item, Frame) and type(item.data) is bytes and item.data == b"abc"
    assert HEADER_LENGTH == 10
