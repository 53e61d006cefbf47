"""One ttrpc call on a plain blocking socket, for tools, benchmarks and tests that run outside trio.

Rules:
- The bytes are the sans-IO ClientConnection's (connection.py): this module only moves them, so a blocking caller
  gets the same framing, limits and error mapping as the trio client.
- A fresh connection per call; the socket is closed before returning.
- An error status raises StatusError with its code; a connection closed before the answer returns None (a
  Shutdown may end the daemon before it answers); the timeout covers connect, send and every receive.
"""
from __future__ import annotations

import socket
from typing import TypeVar

from google.protobuf.message import Message

from ttrpc.codec import CLOSED, NEED_DATA
from ttrpc.connection import ClientConnection, ResponseReceived
from ttrpc.status import Code, StatusError

__all__ = ["call"]

M = TypeVar("M", bound=Message)


def call(path: str, service: str, method: str, request: Message, response_type: type[M], *,
         timeout: float = 30.0) -> M | None:
    """Call ``service/method`` with ``request`` on the unix socket ``path``; the decoded response."""
    conn = ClientConnection()
    _, frame = conn.send_request(service, method, request.SerializeToString())
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(frame)
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
                continue
            if event is CLOSED:
                return None
            assert isinstance(event, ResponseReceived)
            if event.code != Code.OK:
                raise StatusError(event.message, event.code)
            return response_type.FromString(event.payload)
