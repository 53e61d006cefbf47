"""Tables and properties for the sans-IO call state (ttrpc/connection.py): server and client sides.

Rules: bytes go in through receive_data, events come out of next_event; no I/O.  Every row states the frames a
peer sends and the exact events (with Go's status texts) the connection must produce.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protos import status_pb2, ttrpc_pb2
from ttrpc.codec import CLOSED, NEED_DATA, FrameDecoder, encode_frame
from ttrpc.connection import (
    MSG_DATA_ON_UNARY,
    MSG_INACTIVE,
    MSG_ODD,
    MSG_REUSED,
    ClientConnection,
    Rejected,
    RequestReceived,
    ResponseReceived,
    ServerConnection,
    encode_response_data,
)
from ttrpc.frame import MAX_DATA_LENGTH, Frame, MessageType, encode_header
from ttrpc.status import Code, LocalProtocolError, RemoteProtocolError

REQ, RESP, DATA = 1, 2, 3


def request(service: str = "svc", method: str = "M", payload: bytes = b"") -> bytes:
    return ttrpc_pb2.Request(service=service, method=method, payload=payload).SerializeToString()


def events(conn: ServerConnection | ClientConnection, *frames: bytes) -> list[object]:
    conn.receive_data(b"".join(frames))
    out = []
    while (ev := conn.next_event()) is not NEED_DATA:
        out.append(ev)
    return out


def summary(evs: list[object]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for ev in evs:
        if isinstance(ev, RequestReceived):
            out.append(("req", ev.stream_id))
        elif isinstance(ev, Rejected):
            out.append(("rej", ev.stream_id, ev.code, ev.message))
        else:
            out.append(("?", ev))
    return out


SERVER_TABLE = [
    ("odd request", [encode_frame(1, REQ, request())], [("req", 1)]),
    ("even request", [encode_frame(2, REQ, request())], [("rej", 2, Code.INVALID_ARGUMENT, MSG_ODD)]),
    ("even id checked before decoding", [encode_frame(4, REQ, b"\xff\xff")],
     [("rej", 4, Code.INVALID_ARGUMENT, MSG_ODD)]),
    ("reused id", [encode_frame(3, REQ, request()), encode_frame(3, REQ, request())],
     [("req", 3), ("rej", 3, Code.INVALID_ARGUMENT, MSG_REUSED)]),
    ("decreasing id", [encode_frame(5, REQ, request()), encode_frame(1, REQ, request())],
     [("req", 5), ("rej", 1, Code.INVALID_ARGUMENT, MSG_REUSED)]),
    ("rejected id does not count as seen", [encode_frame(3, REQ, b"\xff"), encode_frame(3, REQ, request())],
     [("rej", 3, Code.INVALID_ARGUMENT, "unmarshal request error: Error parsing message with type "
       "'ttrpc.Request': Wire format was corrupt"), ("req", 3)]),
    ("data frame on unknown id", [encode_frame(5, DATA, b"x")], [("rej", 5, Code.INVALID_ARGUMENT, MSG_INACTIVE)]),
    ("data frame on even id", [encode_frame(6, DATA, b"")], [("rej", 6, Code.INVALID_ARGUMENT, MSG_ODD)]),
    ("data frame on an open unary call", [encode_frame(1, REQ, request()), encode_frame(1, DATA, b"x", 1)],
     [("req", 1), ("rej", 1, Code.INVALID_ARGUMENT, MSG_DATA_ON_UNARY)]),
    ("unknown type ignored", [encode_frame(1, 7, b"zz"), encode_frame(2, 0, b""), encode_frame(3, REQ, request())],
     [("req", 3)]),
    ("response frame from a client ignored", [encode_frame(1, RESP, b"")], []),
    ("request flags ignored", [encode_frame(1, REQ, request(), 0x03)], [("req", 1)]),
    ("oversized request answered, next request served",
     [encode_header(MAX_DATA_LENGTH + 5, 1, REQ) + b"\x00" * (MAX_DATA_LENGTH + 5), encode_frame(3, REQ, request())],
     [("rej", 1, Code.RESOURCE_EXHAUSTED, "message length 4194309 exceed maximum message size of 4194304"),
      ("req", 3)]),
]


@pytest.mark.parametrize(("frames", "expected"), [r[1:] for r in SERVER_TABLE], ids=[r[0] for r in SERVER_TABLE])
def test_server_table(frames: list[bytes], expected: list[tuple[object, ...]]) -> None:
    assert summary(events(ServerConnection(), *frames)) == expected


SMALL_ROWS = [r for r in SERVER_TABLE if sum(map(len, r[1])) < 10_000]  # the 4 MiB row is split in test_ttrpc_codec


@pytest.mark.parametrize(("frames", "expected"), [r[1:] for r in SMALL_ROWS], ids=[r[0] for r in SMALL_ROWS])
def test_server_table_byte_by_byte(frames: list[bytes], expected: list[tuple[object, ...]]) -> None:
    conn = ServerConnection()
    got: list[object] = []
    for b in b"".join(frames):
        got += events(conn, bytes([b]))
    assert summary(got) == expected


def test_request_event_carries_the_envelope() -> None:
    req = ttrpc_pb2.Request(service="s", method="m", payload=b"p", timeout_nano=7)
    req.metadata.add(key="k", value="v")
    [ev] = events(ServerConnection(), encode_frame(1, REQ, req.SerializeToString()))
    assert isinstance(ev, RequestReceived) and ev.request == req


def test_rejection_and_success_bytes() -> None:
    conn = ServerConnection()
    [rej] = events(conn, encode_frame(2, REQ, request()))
    data = conn.encode_rejection(rej)
    status = status_pb2.Status(code=3, message=MSG_ODD)
    assert data == encode_frame(2, RESP, ttrpc_pb2.Response(status=status).SerializeToString())
    [ev] = events(conn, encode_frame(1, REQ, request()))
    assert conn.send_response(1, b"\x08\x01") == encode_frame(1, RESP, b"\x12\x02\x08\x01")


def test_each_stream_gets_exactly_one_response(caplog: pytest.LogCaptureFixture) -> None:
    conn = ServerConnection()
    events(conn, encode_frame(1, REQ, request()), encode_frame(3, REQ, request()))
    assert conn.open_streams == {1, 3}
    assert conn.send_response(3, b"") == encode_frame(3, RESP, b"")
    assert conn.send_response(3, b"") is None
    [rej] = events(conn, encode_frame(1, DATA, b"x"))
    assert rej.message == MSG_DATA_ON_UNARY
    with caplog.at_level(logging.INFO, logger="ttrpc.connection"):
        assert conn.send_response(1, b"late") is None
    assert "no longer open" in caplog.text
    assert conn.open_streams == set()


def test_oversized_response_becomes_resource_exhausted() -> None:
    conn = ServerConnection()
    events(conn, encode_frame(1, REQ, request()))
    payload = b"\x00" * MAX_DATA_LENGTH  # the envelope adds 5 bytes
    data = conn.send_response(1, payload)
    assert data is not None and len(data) < 200
    resp = ttrpc_pb2.Response.FromString(data[10:])
    assert resp.status.code == Code.RESOURCE_EXHAUSTED
    assert resp.status.message == "message length 4194309 exceed maximum message size of 4194304"
    assert resp.payload == b""


@given(st.binary(max_size=3000))
def test_hand_encoded_success_response_matches_protobuf(payload: bytes) -> None:
    assert encode_response_data(payload) == ttrpc_pb2.Response(payload=payload).SerializeToString()
    parsed = ttrpc_pb2.Response.FromString(encode_response_data(payload))
    assert parsed.payload == payload and not parsed.HasField("status")


def test_error_response_has_status_and_no_payload() -> None:
    parsed = ttrpc_pb2.Response.FromString(encode_response_data(b"ignored", Code.NOT_FOUND, "gone"))
    assert parsed.status.code == 5 and parsed.status.message == "gone" and parsed.payload == b""


def test_server_end_of_stream() -> None:
    conn = ServerConnection()
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED
    conn = ServerConnection()
    conn.receive_data(b"\x00\x00")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


# -- client side ---------------------------------------------------------------------------------------------------


def response(payload: bytes = b"", code: int | None = None, message: str = "") -> bytes:
    resp = ttrpc_pb2.Response(payload=payload)
    if code is not None:
        resp.status.code = code
        resp.status.message = message
    return resp.SerializeToString()


def open_calls(n: int) -> ClientConnection:
    conn = ClientConnection()
    for _ in range(n):
        conn.send_request("s", "m", b"")
    return conn


def test_client_ids_are_odd_and_increasing_and_frames_are_plain_requests() -> None:
    conn = ClientConnection()
    ids = []
    dec = FrameDecoder()
    for _ in range(5):
        sid, data = conn.send_request("s", "m", b"x", metadata=[("Containerd-Namespace-TTRPC", "default")])
        ids.append(sid)
        dec.feed(data)
        frame = dec.next_frame()
        assert isinstance(frame, Frame) and frame.type == MessageType.REQUEST and frame.flags == 0
        req = ttrpc_pb2.Request.FromString(frame.data)
        assert [(kv.key, kv.value) for kv in req.metadata] == [("containerd-namespace-ttrpc", "default")]
        assert req.timeout_nano == 0
    assert ids == [1, 3, 5, 7, 9]
    assert conn.pending == {1, 3, 5, 7, 9}


CLIENT_TABLE = [
    ("success", 1, [encode_frame(1, RESP, response(b"\x08\x01"))], [ResponseReceived(1, b"\x08\x01")]),
    ("empty success", 1, [encode_frame(1, RESP, b"")], [ResponseReceived(1, b"")]),
    ("explicit OK status", 1, [encode_frame(1, RESP, response(b"p", 0, "fine"))], [ResponseReceived(1, b"p")]),
    ("error status", 1, [encode_frame(1, RESP, response(b"", 5, "gone"))],
     [ResponseReceived(1, b"", Code.NOT_FOUND, "gone")]),
    ("code outside gRPC range", 1, [encode_frame(1, RESP, response(b"", 99, "odd"))],
     [ResponseReceived(1, b"", Code.UNKNOWN, "odd")]),
    ("matched by id, out of order", 3, [encode_frame(5, RESP, b""), encode_frame(1, RESP, b""),
                                        encode_frame(3, RESP, b"")],
     [ResponseReceived(5, b""), ResponseReceived(1, b""), ResponseReceived(3, b"")]),
    ("unknown id dropped", 1, [encode_frame(7, RESP, b""), encode_frame(1, RESP, b"")], [ResponseReceived(1, b"")]),
    ("second response for an id dropped", 1, [encode_frame(1, RESP, b""), encode_frame(1, RESP, b"")],
     [ResponseReceived(1, b"")]),
    ("data frame fails a unary call", 1, [encode_frame(1, DATA, b"x")],
     [ResponseReceived(1, b"", Code.INTERNAL, "ttrpc: unexpected message type 3 on a unary call")]),
    ("unknown type on an unknown id dropped", 1, [encode_frame(9, 9, b"x")], []),
    ("undecodable response", 1, [encode_frame(1, RESP, b"\x0a\x05ab")],
     [ResponseReceived(1, b"", Code.INTERNAL, "ttrpc: error unmarshalling response: Error parsing message with "
                                              "type 'ttrpc.Response': Wire format was corrupt")]),
    ("oversized response fails that call only", 2,
     [encode_header(MAX_DATA_LENGTH + 1, 1, RESP) + b"\x00" * (MAX_DATA_LENGTH + 1), encode_frame(3, RESP, b"")],
     [ResponseReceived(1, b"", Code.RESOURCE_EXHAUSTED,
                       "message length 4194305 exceed maximum message size of 4194304"), ResponseReceived(3, b"")]),
]


@pytest.mark.parametrize(("calls", "frames", "expected"), [r[1:] for r in CLIENT_TABLE],
                         ids=[r[0] for r in CLIENT_TABLE])
def test_client_table(calls: int, frames: list[bytes], expected: list[ResponseReceived]) -> None:
    assert events(open_calls(calls), *frames) == expected


def test_client_logs_responses_for_inactive_streams(caplog: pytest.LogCaptureFixture) -> None:
    conn = open_calls(1)
    conn.forget(1)
    with caplog.at_level(logging.WARNING, logger="ttrpc.connection"):
        assert events(conn, encode_frame(1, RESP, b"")) == []
    assert "inactive stream 1" in caplog.text


def test_client_refuses_oversized_request_without_using_an_id() -> None:
    conn = ClientConnection()
    with pytest.raises(LocalProtocolError) as info:
        conn.send_request("s", "m", b"\x00" * MAX_DATA_LENGTH)
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    assert info.value.message == "message length 4194315 exceed maximum message size of 4194304"
    assert conn.send_request("s", "m", b"")[0] == 1


def test_client_close_returns_pending_ids() -> None:
    conn = open_calls(3)
    events(conn, encode_frame(3, RESP, b""))
    assert conn.close() == [1, 5]
    assert conn.pending == set()


@given(st.lists(st.tuples(st.binary(max_size=50), st.sampled_from(list(Code))), min_size=1, max_size=12),
       st.randoms(use_true_random=False))
def test_client_and_server_agree(calls: list[tuple[bytes, Code]], rnd: object) -> None:
    """ConnectionPair-style: any set of calls answered in any order reaches the right caller."""
    client, server = ClientConnection(), ServerConnection()
    sent = {}
    wire = b""
    for payload, code in calls:
        sid, data = client.send_request("svc", "M", payload)
        sent[sid] = (payload, code)
        wire += data
    received = events(server, wire)
    assert [ev.stream_id for ev in received] == sorted(sent)
    rnd.shuffle(received)  # type: ignore[attr-defined]
    answers = b""
    for ev in received:
        payload, code = sent[ev.stream_id]
        assert ev.request.payload == payload
        answers += server.send_response(ev.stream_id, payload, code, f"err {ev.stream_id}") or b""
    results = {ev.stream_id: ev for ev in events(client, answers)}
    assert set(results) == set(sent)
    for sid, (payload, code) in sent.items():
        ev = results[sid]
        if code == Code.OK:
            assert (ev.code, ev.payload) == (Code.OK, payload)
        else:
            assert (ev.code, ev.message, ev.payload) == (code, f"err {sid}", b"")
    assert client.pending == set() and server.open_streams == set()
