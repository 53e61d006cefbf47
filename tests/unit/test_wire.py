"""ttrpc/wire.py against the protobuf runtime: what we encode decodes there, and the other way round."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2, timestamp_pb2
from hypothesis import given, strategies as st

from protos import introspection_pb2, runc_options_pb2, task_v2_pb2
from ttrpc import wire

uint32s = st.integers(min_value=0, max_value=2**32 - 1)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
nanos = st.integers(min_value=0, max_value=999_999_999)
texts = st.text(max_size=50)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = wire.varint(value)
    assert wire.read_varint(encoded, 0) == (value, len(encoded))


def test_negative_varint_is_ten_bytes_twos_complement() -> None:
    assert wire.varint(-1) == b"\xff" * 9 + b"\x01"
    with pytest.raises(ValueError):
        wire.varint(2**64)


@given(pid=uint32s, status=uint32s, seconds=int64s, ns=nanos)
def test_delete_response_decodes_with_protobuf(pid: int, status: int, seconds: int, ns: int) -> None:
    data = (wire.uint_field(1, pid) + wire.uint_field(2, status)
            + wire.message_field(3, wire.timestamp(seconds, ns)))
    msg = task_v2_pb2.DeleteResponse.FromString(data)
    assert (msg.pid, msg.exit_status, msg.exited_at.seconds, msg.exited_at.nanos) == (pid, status, seconds, ns)
    assert msg.HasField("exited_at")
    # Same bytes as the protobuf runtime's canonical encoding.
    assert data == msg.SerializeToString(deterministic=True)


def test_zero_fields_are_omitted_but_set_messages_are_not() -> None:
    assert wire.uint_field(1, 0) == wire.string_field(2, "") == wire.bytes_field(3, b"") == b""
    assert wire.message_field(3, b"") == b"\x1a\x00"
    assert task_v2_pb2.DeleteResponse.FromString(wire.message_field(3, b"")).HasField("exited_at")


@given(ns=st.integers(min_value=0, max_value=2**62))
def test_timestamp_ns(ns: int) -> None:
    ts = timestamp_pb2.Timestamp.FromString(wire.timestamp_ns(ns))
    assert ts.seconds * 1_000_000_000 + ts.nanos == ns


@given(type_url=texts, value=st.binary(max_size=200))
def test_any_both_ways(type_url: str, value: bytes) -> None:
    encoded = wire.any_message(type_url, value)
    parsed = any_pb2.Any.FromString(encoded)
    assert (parsed.type_url, parsed.value) == (type_url, value)
    assert wire.decode_any(any_pb2.Any(type_url=type_url, value=value).SerializeToString()) == (type_url, value)


@given(cgroup=texts, binary=texts, uid=uint32s, root=texts)
def test_decoding_protobuf_encoded_options(cgroup: str, binary: str, uid: int, root: str) -> None:
    opts = runc_options_pb2.Options(shim_cgroup=cgroup, binary_name=binary, io_uid=uid, root=root,
                                    systemd_cgroup=True)
    decoded = wire.fields(opts.SerializeToString())
    assert wire.get_string(decoded, 3) == cgroup
    assert wire.get_string(decoded, 6) == binary
    assert wire.get_string(decoded, 7) == root
    assert wire.get_uint(decoded, 4) == uid
    assert wire.get_uint(decoded, 9) == 1


def test_runtime_info_shape_decodes() -> None:
    version = wire.string_field(1, "1.2.3") + wire.string_field(2, "abc")
    data = (wire.string_field(1, "io.containerd.pyshim.v1") + wire.message_field(2, version)
            + wire.message_field(4, wire.any_message("t/u", b"{}")))
    info = introspection_pb2.RuntimeInfo.FromString(data)
    assert (info.name, info.version.version, info.version.revision) == ("io.containerd.pyshim.v1", "1.2.3", "abc")
    assert (info.features.type_url, info.features.value) == ("t/u", b"{}")
    assert not info.HasField("options")


def test_fixed_fields_and_unknown_fields_are_skipped() -> None:
    data = (wire.tag(9, wire.FIXED64) + (7).to_bytes(8, "little") + wire.tag(10, wire.FIXED32)
            + (5).to_bytes(4, "little") + wire.string_field(1, "x"))
    assert wire.fields(data) == {9: 7, 10: 5, 1: b"x"}
    assert wire.decode_any(data) == ("x", b"")


def test_last_occurrence_wins() -> None:
    assert wire.fields(wire.string_field(1, "a") + wire.string_field(1, "b")) == {1: b"b"}


@pytest.mark.parametrize("data,message", [
    (b"\x08", "truncated varint"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    (b"\x0a\x05abc", "past the end"),
    (b"\x09\x00", "truncated fixed64"),
    (b"\x0b", "unsupported wire type 3"),
    (b"\x00\x01", "field number 0"),
])
def test_malformed_input_raises(data: bytes, message: str) -> None:
    with pytest.raises(wire.WireError, match=message):
        wire.fields(data)


def test_type_confusion_raises() -> None:
    with pytest.raises(wire.WireError):
        wire.get_string(wire.fields(wire.uint_field(1, 5)), 1)
    with pytest.raises(wire.WireError):
        wire.get_uint(wire.fields(wire.string_field(1, "x")), 1)
    with pytest.raises(wire.WireError, match="UTF-8"):
        wire.decode_any(wire.bytes_field(1, b"\xff"))


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    try:
        wire.fields(data)
    except wire.WireError:
        pass
