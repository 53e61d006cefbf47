"""Worked byte examples of ttrpc calls (the hex dumps of test_proto_wire.py), reproduced exactly by the sans-IO layer.

Rules: each example is produced by our encoder byte for byte, and decoded back by the opposite side.
Method payloads (containerd messages) are written out as bytes here, since this package knows only the envelope.
"""

from __future__ import annotations

from ttrpc.codec import NEED_DATA
from ttrpc.connection import ClientConnection, RequestReceived, ResponseReceived, ServerConnection
from ttrpc.status import Code

NS_KEY = "containerd-namespace-ttrpc"

EX_11_1_CONNECT = bytes.fromhex("""
    00 00 00 58 00 00 00 01 01 00 0a 17 63 6f 6e 74  61 69 6e 65 72 64 2e 74 61 73 6b 2e 76 32 2e 54
    61 73 6b 12 07 43 6f 6e 6e 65 63 74 1a 07 0a 05  72 65 64 69 73 20 80 e4 97 d0 12 2a 25 0a 1a 63
    6f 6e 74 61 69 6e 65 72 64 2d 6e 61 6d 65 73 70  61 63 65 2d 74 74 72 70 63 12 07 64 65 66 61 75
    6c 74""")
EX_11_2_CONNECT_OK = bytes.fromhex("00 00 00 08 00 00 00 01 02 00 12 06 08 92 21 10  cc 21")
EX_11_3_EMPTY_OK = bytes.fromhex("00 00 00 00 00 00 00 05 02 00")
EX_11_4_KILL = bytes.fromhex("""
    00 00 00 52 00 00 00 03 01 00 0a 17 63 6f 6e 74  61 69 6e 65 72 64 2e 74 61 73 6b 2e 76 32 2e 54
    61 73 6b 12 04 4b 69 6c 6c 1a 0b 0a 05 72 65 64  69 73 18 09 20 01 2a 24 0a 1a 63 6f 6e 74 61 69
    6e 65 72 64 2d 6e 61 6d 65 73 70 61 63 65 2d 74  74 72 70 63 12 06 6b 38 73 2e 69 6f""")
EX_11_4_NOT_FOUND = bytes.fromhex("""
    00 00 00 29 00 00 00 03 02 00 0a 27 08 05 12 23  70 72 6f 63 65 73 73 20 61 6c 72 65 61 64 79 20
    66 69 6e 69 73 68 65 64 3a 20 6e 6f 74 20 66 6f  75 6e 64""")
EX_11_5_UNKNOWN_SERVICE = bytes.fromhex("""
    00 00 00 25 00 00 00 01 02 00 0a 23 08 0c 12 1f  73 65 72 76 69 63 65 20 63 6f 6e 74 61 69 6e 65
    72 64 2e 74 61 73 6b 2e 76 33 2e 54 61 73 6b""")
EX_11_6_FORWARD = bytes.fromhex("""
    00 00 00 ca 00 00 00 01 01 00 0a 2a 63 6f 6e 74  61 69 6e 65 72 64 2e 73 65 72 76 69 63 65 73 2e
    65 76 65 6e 74 73 2e 74 74 72 70 63 2e 76 31 2e  45 76 65 6e 74 73 12 07 46 6f 72 77 61 72 64 1a
    66 0a 64 0a 0b 08 80 e2 cf aa 06 10 80 84 af 5f  12 07 64 65 66 61 75 6c 74 1a 0b 2f 74 61 73 6b
    73 2f 65 78 69 74 22 3f 0a 1a 63 6f 6e 74 61 69  6e 65 72 64 2e 65 76 65 6e 74 73 2e 54 61 73 6b
    45 78 69 74 12 21 0a 05 72 65 64 69 73 12 05 72  65 64 69 73 18 cc 21 20 89 01 2a 0b 08 80 e2 cf
    aa 06 10 95 9a ef 3a 20 80 e4 97 d0 12 2a 25 0a  1a 63 6f 6e 74 61 69 6e 65 72 64 2d 6e 61 6d 65
    73 70 61 63 65 2d 74 74 72 70 63 12 07 64 65 66  61 75 6c 74""")


def field(number: int, value: bytes) -> bytes:
    """A length-delimited protobuf field (all our lengths are < 128)."""
    assert len(value) < 128
    return bytes([number << 3 | 2, len(value)]) + value


def only_event(conn: ServerConnection | ClientConnection, data: bytes) -> object:
    conn.receive_data(data)
    event = conn.next_event()
    assert conn.next_event() is NEED_DATA
    return event


def test_11_1_connect_request() -> None:
    client = ClientConnection()
    sid, data = client.send_request("containerd.task.v2.Task", "Connect", bytes.fromhex("0a 05 72 65 64 69 73"),
                                    timeout_nano=5_000_000_000, metadata=[(NS_KEY, "default")])
    assert (sid, data) == (1, EX_11_1_CONNECT)
    event = only_event(ServerConnection(), data)
    assert isinstance(event, RequestReceived) and event.stream_id == 1
    req = event.request
    assert (req.service, req.method, req.payload, req.timeout_nano) == (
        "containerd.task.v2.Task", "Connect", b"\x0a\x05redis", 5_000_000_000)
    assert [(kv.key, kv.value) for kv in req.metadata] == [(NS_KEY, "default")]


def test_11_2_success_response_has_no_status() -> None:
    server = ServerConnection()
    only_event(server, EX_11_1_CONNECT)
    payload = bytes.fromhex("08 92 21 10 cc 21")  # ConnectResponse{shim_pid:4242, task_pid:4300}
    assert server.send_response(1, payload) == EX_11_2_CONNECT_OK
    client = ClientConnection()
    client.send_request("containerd.task.v2.Task", "Connect", b"")
    assert only_event(client, EX_11_2_CONNECT_OK) == ResponseReceived(1, payload)


def test_11_3_success_with_empty_payload() -> None:
    server = ServerConnection()
    client = ClientConnection()
    for _ in range(3):
        only_event(server, client.send_request("containerd.task.v2.Task", "Kill", b"")[1])
    assert server.send_response(5, b"") == EX_11_3_EMPTY_OK
    assert only_event(client, EX_11_3_EMPTY_OK) == ResponseReceived(5, b"")


def test_11_4_kill_request_and_not_found_answer() -> None:
    client = ClientConnection()
    server = ServerConnection()
    only_event(server, client.send_request("containerd.task.v2.Task", "State", b"")[1])  # stream 1
    kill = bytes.fromhex("0a 05 72 65 64 69 73 18 09 20 01")  # KillRequest{id:"redis", signal:9, all:true}
    sid, data = client.send_request("containerd.task.v2.Task", "Kill", kill, metadata=[(NS_KEY, "k8s.io")])
    assert (sid, data) == (3, EX_11_4_KILL)
    event = only_event(server, data)
    assert isinstance(event, RequestReceived) and event.request.payload == kill
    answer = server.send_response(3, b"", Code.NOT_FOUND, "process already finished: not found")
    assert answer == EX_11_4_NOT_FOUND
    assert only_event(client, answer) == ResponseReceived(3, b"", Code.NOT_FOUND,
                                                          "process already finished: not found")


def test_11_5_unknown_service_answer() -> None:
    server = ServerConnection()
    only_event(server, ClientConnection().send_request("containerd.task.v3.Task", "Connect", b"")[1])
    answer = server.send_response(1, b"", Code.UNIMPLEMENTED, "service containerd.task.v3.Task")
    assert answer == EX_11_5_UNKNOWN_SERVICE


def test_11_6_forward_request() -> None:
    timestamp = bytes.fromhex("08 80 e2 cf aa 06 10 80 84 af 5f")
    task_exit = (field(1, b"redis") + field(2, b"redis") + bytes.fromhex("18 cc 21 20 89 01")
                 + field(5, bytes.fromhex("08 80 e2 cf aa 06 10 95 9a ef 3a")))
    event_any = field(1, b"containerd.events.TaskExit") + field(2, task_exit)
    envelope = field(1, timestamp) + field(2, b"default") + field(3, b"/tasks/exit") + field(4, event_any)
    forward_request = field(1, envelope)
    sid, data = ClientConnection().send_request("containerd.services.events.ttrpc.v1.Events", "Forward",
                                                forward_request, timeout_nano=5_000_000_000,
                                                metadata=[(NS_KEY, "default")])
    assert (sid, data) == (1, EX_11_6_FORWARD)
