"""shim/sharing.py: the Reserve messages byte for byte, the request frame, and ``reserve()`` (the blocking client
``start`` uses) against a real trio ttrpc server running the daemon's Shard service (tests/unit/shard_server.py),
or against raw peers that misbehave."""
from __future__ import annotations

import os
import socket
import threading

import pytest

from protos import ttrpc_pb2
from shim import sharing
from tests.unit.shard_server import ShardServer
from tests.unit.test_start_delete import socket_dir  # noqa: F401 - a short directory for sun_path
from tests.unit.test_ttrpc_blocking import serve_one
from ttrpc.codec import NEED_DATA, FrameDecoder
from ttrpc.frame import MessageType, encode_header
from ttrpc.status import Code


# -- the messages ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("message, hex_bytes", [
    (sharing.ReserveRequest("c1"), "0a026331"),
    (sharing.ReserveRequest(""), ""),
    (sharing.ReserveRequest("é-" + "x" * 200), "0acb01" + "c3a92d" + "78" * 200),  # 203 bytes: 2-byte varint
    (sharing.ReserveResponse(True), "0801"),
    (sharing.ReserveResponse(False, ""), ""),
    (sharing.ReserveResponse(False, "full"), "120466756c6c"),
    (sharing.ReserveResponse(True, "ok"), "0801" + "12026f6b"),
])
def test_messages_encode_and_decode_exactly(message, hex_bytes: str) -> None:
    data = bytes.fromhex(hex_bytes)
    assert message.SerializeToString() == data
    assert type(message).FromString(data) == message


def test_decoding_skips_unknown_fields_and_keeps_the_last_value() -> None:
    extra = bytes.fromhex("1805" "2a03616263")  # field 3 varint, field 5 bytes: unknown to both messages
    assert sharing.ReserveRequest.FromString(extra + bytes.fromhex("0a0161" "0a0162")) == sharing.ReserveRequest("b")
    assert sharing.ReserveResponse.FromString(bytes.fromhex("0801") + extra + bytes.fromhex("1201" "78")) \
        == sharing.ReserveResponse(True, "x")
    assert sharing.ReserveResponse.FromString(bytes.fromhex("0800")) == sharing.ReserveResponse(False, "")


def test_request_frame_is_a_ttrpc_unary_call_of_shard_reserve() -> None:
    decoder = FrameDecoder()
    decoder.feed(sharing._request_frame("c1"))
    frame = decoder.next_frame()
    assert decoder.next_frame() is NEED_DATA  # exactly one frame, nothing after it
    assert (frame.stream_id, frame.type, frame.flags) == (1, MessageType.REQUEST, 0)
    request = ttrpc_pb2.Request.FromString(frame.data)
    assert (request.service, request.method) == ("pyshim.shard.v1.Shard", "Reserve")
    assert request.payload == bytes.fromhex("0a026331")
    assert request.timeout_nano == int(sharing.RESERVE_TIMEOUT * 1e9)
    assert list(request.metadata) == []


def test_shard_group_names_the_shards_of_a_key() -> None:
    assert [sharing.shard_group("shared-abc", i) for i in (0, 1, 17)] == \
        ["shared-abc-0", "shared-abc-1", "shared-abc-17"]
    assert len({sharing.shard_group(k, i) for k in ("a", "b") for i in range(3)}) == 6


# -- reserve() against the daemon's real Shard service ----------------------------------------------------

@pytest.fixture
def path(socket_dir: str) -> str:
    os.makedirs(socket_dir, mode=0o700)
    return os.path.join(socket_dir, "shard")


def test_reserve_is_accepted_and_held_by_the_daemon(path: str) -> None:
    with ShardServer(path, max_tasks=2) as shard:
        assert sharing.reserve(path, "c1") == sharing.ReserveResponse(True, "")
        assert shard.call(lambda: sorted(shard.occupancy.reservations)) == ["c1"]


def test_reserve_is_refused_when_the_shard_is_full(path: str) -> None:
    with ShardServer(path, max_tasks=2) as shard:
        assert sharing.reserve(path, "c1").accepted
        assert sharing.reserve(path, "c2").accepted
        answer = sharing.reserve(path, "c3")
        assert not answer.accepted and "full" in answer.reason and "2 of 2" in answer.reason
        assert shard.call(lambda: sorted(shard.occupancy.reservations)) == ["c1", "c2"]


def test_reserve_of_an_id_already_held_is_accepted_again_without_a_second_place(path: str) -> None:
    with ShardServer(path, max_tasks=2, reserved=("c1",)) as shard:
        assert sharing.reserve(path, "c1").accepted
        assert sharing.reserve(path, "c1").accepted
        assert sharing.reserve(path, "c2").accepted       # c1 took one place only
        assert not sharing.reserve(path, "c3").accepted
        shard.call(shard.occupancy.created, "c2", "/b/c2")  # a live task counts too, and is accepted again
        assert sharing.reserve(path, "c2").accepted
        assert not sharing.reserve(path, "c3").accepted


def test_reserve_is_refused_once_the_daemon_is_closing(path: str) -> None:
    with ShardServer(path, max_tasks=8, reserved=("c1",)) as shard:
        shard.call(setattr, shard.occupancy, "closing", True)
        for cid in ("c1", "c2"):  # not even an id it holds
            answer = sharing.reserve(path, cid)
            assert not answer.accepted and answer.reason == "shutting down"


def test_a_daemon_without_the_shard_service_refuses_with_its_code(path: str) -> None:
    with ShardServer(path, shard=False):
        answer = sharing.reserve(path, "c1")
    assert not answer.accepted
    assert answer.reason == f"refused with code {int(Code.UNIMPLEMENTED)}: service pyshim.shard.v1.Shard"


@pytest.fixture
def raw_listener(path: str):
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        s.listen(1)
        yield s


def test_an_error_status_is_a_refusal_that_names_the_code(raw_listener: socket.socket) -> None:
    t = serve_one(raw_listener, lambda conn, sock, event: sock.sendall(
        conn.send_response(event.stream_id, code=Code.RESOURCE_EXHAUSTED, message="too busy")))
    answer = sharing.reserve(raw_listener.getsockname(), "c1")
    t.join()
    assert answer == sharing.ReserveResponse(False, f"refused with code {int(Code.RESOURCE_EXHAUSTED)}: too busy")


def test_a_connection_closed_unanswered_is_a_refusal(raw_listener: socket.socket) -> None:
    t = serve_one(raw_listener, lambda conn, sock, event: None)
    answer = sharing.reserve(raw_listener.getsockname(), "c1")
    t.join()
    assert not answer.accepted and answer.reason.startswith("no answer")


def test_a_silent_daemon_is_a_refusal_after_the_timeout(raw_listener: socket.socket) -> None:
    held = []
    accepted = threading.Thread(target=lambda: held.append(raw_listener.accept()[0]))
    accepted.start()
    try:
        answer = sharing.reserve(raw_listener.getsockname(), "c1", timeout=0.2)
    finally:
        accepted.join()
        held[0].close()
    assert not answer.accepted and answer.reason.startswith("no answer") and "timed out" in answer.reason


def test_nothing_listening_is_a_refusal(path: str) -> None:
    answer = sharing.reserve(path, "c1")
    assert not answer.accepted and answer.reason.startswith("no answer")


@pytest.mark.parametrize("header, words", [
    (encode_header(2, 1, MessageType.REQUEST), "type 1, stream 1, 2 bytes"),
    (encode_header(2, 3, MessageType.RESPONSE), "type 2, stream 3, 2 bytes"),
    (encode_header(1 << 20, 1, MessageType.RESPONSE), f"stream 1, {1 << 20} bytes"),
])
def test_an_unexpected_frame_is_a_refusal(raw_listener: socket.socket, header: bytes, words: str) -> None:
    t = serve_one(raw_listener, lambda conn, sock, event: sock.sendall(header + b"\x08\x01"))
    answer = sharing.reserve(raw_listener.getsockname(), "c1")
    t.join()
    assert not answer.accepted and answer.reason.startswith("unexpected ttrpc frame") and words in answer.reason
