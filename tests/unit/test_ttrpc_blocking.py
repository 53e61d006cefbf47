"""ttrpc.blocking.call against a server thread that speaks through the sans-IO ServerConnection."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from protos import task_v2_pb2 as pb
from ttrpc import blocking
from ttrpc.codec import NEED_DATA
from ttrpc.connection import RequestReceived, ServerConnection
from ttrpc.status import Code, StatusError


def serve_one(listener: socket.socket, answer) -> threading.Thread:
    """Accept one connection, read one request, ``answer(conn, sock, request_event)``."""
    def run() -> None:
        sock, _ = listener.accept()
        with sock:
            conn = ServerConnection()
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    conn.receive_data(sock.recv(65536))
                    continue
                assert isinstance(event, RequestReceived)
                answer(conn, sock, event)
                return
    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.fixture
def listener(tmp_path: Path):
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "s"))
        s.listen(1)
        yield s


def test_a_call_is_answered(listener: socket.socket) -> None:
    def answer(conn, sock, event):
        assert (event.request.service, event.request.method) == ("containerd.task.v2.Task", "Connect")
        assert pb.ConnectRequest.FromString(event.request.payload).id == "c1"
        sock.sendall(conn.send_response(event.stream_id, pb.ConnectResponse(shim_pid=42).SerializeToString()))
    t = serve_one(listener, answer)
    got = blocking.call(listener.getsockname(), "containerd.task.v2.Task", "Connect", pb.ConnectRequest(id="c1"),
                        pb.ConnectResponse, timeout=10)
    t.join()
    assert got.shim_pid == 42


def test_an_error_status_raises_with_its_code(listener: socket.socket) -> None:
    t = serve_one(listener, lambda conn, sock, event: sock.sendall(
        conn.send_response(event.stream_id, code=Code.NOT_FOUND, message="no such task")))
    with pytest.raises(StatusError) as err:
        blocking.call(listener.getsockname(), "s", "m", pb.StateRequest(id="x"), pb.StateResponse, timeout=10)
    t.join()
    assert (err.value.code, err.value.message) == (Code.NOT_FOUND, "no such task")


def test_closed_unanswered_is_none(listener: socket.socket) -> None:
    t = serve_one(listener, lambda conn, sock, event: None)
    assert blocking.call(listener.getsockname(), "s", "Shutdown", pb.ShutdownRequest(id="x"), pb.StateResponse,
                         timeout=10) is None
    t.join()
