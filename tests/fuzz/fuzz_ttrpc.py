"""atheris harness for the sans-IO ttrpc layer (ttrpc/codec.py, ttrpc/connection.py); see tests/fuzz/README.md.

One input is: byte 0 chooses the side and the size limit, byte 1 chooses how the rest is split, the rest is what the
peer sent.  ``one_input`` feeds those bytes to a ServerConnection (or, for odd byte 0, a ClientConnection with open
calls) split that way, then again in one piece, and asserts the module rules:
- only RemoteProtocolError comes out of ``next_event``, and only once end of stream has been fed;
- the events do not depend on how the bytes were split;
- after each drain the decoder holds less than one header plus ``limit`` data bytes (an oversized frame's data is
  skipped, never buffered);
- server: rejections carry only INVALID_ARGUMENT or RESOURCE_EXHAUSTED with Go's texts, stream ids are odd and
  increasing, ``open_streams`` is exactly the accepted calls not yet answered or closed by a Data frame, and every
  frame the connection writes (each rejection, each answer) is one well-formed Response that a ClientConnection
  decodes back to the same code, message and payload;
- client: only calls still pending are settled, each at most once, and ``close()`` returns the rest.

Without atheris the module is plain Python: tests/unit/test_ttrpc_fuzz.py runs ``one_input`` over the committed
corpus (tests/fuzz/corpus/ttrpc) and over hypothesis inputs.  ``seed_inputs()`` makes the seed files of the corpus.
"""

from __future__ import annotations

import contextlib
import random
import sys

if __name__ == "__main__":  # instrument the library for coverage before anything imports it
    import atheris

    _instrumented = atheris.instrument_imports(include=["ttrpc"])
else:
    _instrumented = contextlib.nullcontext()

with _instrumented:
    from protos import ttrpc_pb2
    from ttrpc.codec import CLOSED, NEED_DATA, FrameDecoder, encode_frame, oversize_message
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
    from ttrpc.frame import HEADER_LENGTH, MAX_DATA_LENGTH, Frame, MessageType, encode_header
    from ttrpc.status import Code, RemoteProtocolError

# Small limits make oversized frames (and the RESOURCE_EXHAUSTED replacement of big answers) cheap to reach.
LIMITS = (MAX_DATA_LENGTH, 128, 1024, 4096)
BYTE_BY_BYTE_UP_TO = 1024  # inputs up to this size are also fed one byte at a time


def split_points(seed: int, size: int) -> list[int]:
    """Where to cut ``size`` bytes: 0 = nowhere, 1 = everywhere, else up to 16 seeded cuts."""
    if seed == 0 or size == 0:
        return []
    if seed == 1:
        return list(range(1, size))
    rnd = random.Random(seed)
    return sorted({rnd.randrange(1, size + 1) for _ in range(seed % 16 + 1)})


def pieces(wire: bytes, cuts: list[int]) -> list[bytes]:
    out, start = [], 0
    for cut in [*cuts, len(wire)]:
        if cut > start:
            out.append(wire[start:cut])
            start = cut
    return out


def check_response_bytes(data: bytes, sid: int, code: Code, message: str, payload: bytes, limit: int) -> None:
    """``data`` is one Response frame on ``sid`` that a ClientConnection waiting for ``sid`` reads as given."""
    dec = FrameDecoder(limit)
    dec.feed(data)
    frame = dec.next_frame()
    assert isinstance(frame, Frame), frame
    assert (frame.stream_id, frame.type, frame.flags) == (sid, MessageType.RESPONSE, 0)
    assert dec.next_frame() is NEED_DATA and dec.buffered == 0, "more than one frame written"
    client = ClientConnection(limit)
    client._pending.add(sid)  # a client that has this call open (it may be an id no real client would use)
    client.receive_data(data)
    event = client.next_event()
    if len(encode_response_data(payload, code, message)) > limit:  # replaced by RESOURCE_EXHAUSTED, never sent
        assert isinstance(event, ResponseReceived) and event.code == Code.RESOURCE_EXHAUSTED, event
        assert event.message.startswith("message length ") and event.payload == b""
    else:
        ok = code == Code.OK  # success carries the payload and no status; an error, the status and no payload
        assert event == ResponseReceived(sid, payload if ok else b"", code, "" if ok else message), event
    assert client.next_event() is NEED_DATA and client.pending == frozenset()


class ServerRun:
    """Feeds one ServerConnection and checks every event against the rules; ``out`` records what it saw."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.conn = ServerConnection(limit)
        self.out: list[object] = []
        self.open: set[int] = set()  # the accepted calls that still owe their answer, as the rules say
        self.deferred: list[RequestReceived] = []
        self.last_id = 0

    def feed(self, piece: bytes) -> bool:
        """Feed one piece (b"" = end of stream) and drain it; True once the connection is over."""
        self.conn.receive_data(piece)
        while True:
            try:
                event = self.conn.next_event()
            except RemoteProtocolError as exc:
                assert piece == b"", f"RemoteProtocolError before end of stream: {exc}"
                self.out.append(("error", str(exc)))
                return True
            if event is NEED_DATA:
                assert piece != b""
                break
            if event is CLOSED:
                assert piece == b""
                self.out.append("closed")
                return True
            self.on_event(event)
        buffered = self.conn._decoder.buffered
        assert buffered < HEADER_LENGTH + self.limit, f"{buffered} bytes buffered, limit {self.limit}"
        return False

    def on_event(self, event: object) -> None:
        if isinstance(event, RequestReceived):
            sid = event.stream_id
            assert sid & 1 and sid > self.last_id, f"accepted stream id {sid} after {self.last_id}"
            self.last_id = sid
            self.open.add(sid)
            self.out.append(("request", sid, event.request.SerializeToString(deterministic=True), event.flags))
            if sid & 2:
                self.answer(event)
            else:
                self.deferred.append(event)
        else:
            assert isinstance(event, Rejected), event
            self.out.append(("rejected", event.stream_id, event.code, event.message))
            self.check_rejection(event)
            check_response_bytes(self.conn.encode_rejection(event), event.stream_id, event.code, event.message,
                                 b"", self.limit)
        assert self.conn.open_streams == self.open

    def check_rejection(self, event: Rejected) -> None:
        sid = event.stream_id
        if event.code == Code.RESOURCE_EXHAUSTED:
            prefix = "message length "
            assert event.message.startswith(prefix) and event.message.endswith(f" of {self.limit}"), event
            length = int(event.message[len(prefix):].split(" ", 1)[0])
            assert event.message == oversize_message(length, self.limit) and length > self.limit
            self.open.discard(sid)
            return
        assert event.code == Code.INVALID_ARGUMENT, event
        if event.message == MSG_ODD:
            assert sid & 1 == 0
        elif event.message == MSG_REUSED:
            assert sid & 1 and sid <= self.last_id
        elif event.message == MSG_DATA_ON_UNARY:
            assert sid in self.open
            self.open.discard(sid)
        elif event.message == MSG_INACTIVE:
            assert sid & 1 and sid not in self.open
        else:
            assert event.message.startswith("unmarshal request error: ") and sid & 1, event

    def answer(self, event: RequestReceived) -> None:
        """Answer a call: echo its payload (sid % 8 < 4), else an error whose code follows the id."""
        sid = event.stream_id
        if sid % 8 < 4:
            code, message, payload = Code.OK, "", event.request.payload
        else:
            code, message, payload = Code((sid >> 3) % 16 + 1), f"error on {sid}", b""
        data = self.conn.send_response(sid, payload, code, message)
        if sid in self.open:
            assert data is not None
            self.open.discard(sid)
            check_response_bytes(data, sid, code, message, payload, self.limit)
            self.out.append(("answered", sid))
        else:  # closed by a Data frame or an oversized frame: the handler's answer is dropped
            assert data is None
            self.out.append(("dropped", sid))
        assert self.conn.send_response(sid, payload, code, message) is None, "answered twice"

    def finish(self) -> list[object]:
        for event in self.deferred:
            self.answer(event)
        assert self.conn.open_streams == frozenset() == self.open
        return self.out


def run_server(chunks: list[bytes], limit: int) -> list[object]:
    run = ServerRun(limit)
    for piece in [*(c for c in chunks if c), b""]:  # b"" is end of stream
        if run.feed(piece):
            break
    return run.finish()


def run_client(chunks: list[bytes], limit: int, calls: int) -> list[object]:
    conn = ClientConnection(limit)
    ids = [conn.send_request("containerd.task.v2.Task", "State", b"")[0] for _ in range(calls)]
    assert ids == list(range(1, 2 * calls, 2))
    pending = set(ids)
    out: list[object] = []
    for piece in [*(c for c in chunks if c), b""]:  # b"" is end of stream
        conn.receive_data(piece)
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                assert piece == b""
                out.append(("error", str(exc)))
                break
            if event is NEED_DATA:
                assert piece != b""
                break
            if event is CLOSED:
                assert piece == b""
                out.append("closed")
                break
            assert isinstance(event, ResponseReceived), event
            assert event.stream_id in pending, f"settled twice or never asked: {event}"
            pending.discard(event.stream_id)
            assert isinstance(event.code, Code)
            if event.code == Code.OK:
                assert event.message == ""
            else:
                assert event.payload == b""
            out.append(event)
            assert conn.pending == pending
        assert conn._decoder.buffered < HEADER_LENGTH + limit, f"{conn._decoder.buffered} bytes buffered"
    assert conn.close() == sorted(pending) and conn.pending == frozenset()
    return out


def one_input(data: bytes) -> None:
    """The fuzz target: check the rules for one input (see the module docstring)."""
    if len(data) < 2:
        return
    mode, seed, wire = data[0], data[1], bytes(data[2:])
    limit = LIMITS[(mode >> 1) & 3]
    ways = [pieces(wire, split_points(seed, len(wire)))]
    if seed != 0:
        ways.append(pieces(wire, []))
    if seed != 1 and len(wire) <= BYTE_BY_BYTE_UP_TO:
        ways.append(pieces(wire, split_points(1, len(wire))))
    if mode & 1:
        calls = (mode >> 3) % 8
        results = [run_client(chunks, limit, calls) for chunks in ways]
    else:
        results = [run_server(chunks, limit) for chunks in ways]
    for other in results[1:]:
        assert other == results[0], "the events depend on how the bytes were split"


# -- seeds ---------------------------------------------------------------------------------------------------------

TASK = "containerd.task.v2.Task"
NS = [("containerd-namespace-ttrpc", "default")]
SERVER, CLIENT = 0, 1


def _limit_bits(limit: int) -> int:
    return LIMITS.index(limit) << 1


def _requests(*calls: tuple[str, bytes]) -> bytes:
    client = ClientConnection()
    return b"".join(client.send_request(TASK, method, payload, timeout_nano=5_000_000_000, metadata=NS)[1]
                    for method, payload in calls)


def seed_inputs() -> dict[str, bytes]:
    """Named seed inputs: valid calls of several task methods, and each kind of frame the rules single out."""
    from protos import task_v2_pb2 as pb

    create = pb.CreateTaskRequest(id="c1", bundle="/run/containerd/c1", stdout="/run/fifo/out", terminal=True)
    create.rootfs.add(type="overlay", source="overlay", options=["lowerdir=/l", "upperdir=/u"])
    calls = [("Create", create.SerializeToString()), ("Start", pb.StartRequest(id="c1").SerializeToString()),
             ("State", pb.StateRequest(id="c1", exec_id="e1").SerializeToString()),
             ("Kill", pb.KillRequest(id="c1", signal=9, all=True).SerializeToString()),
             ("Exec", pb.ExecProcessRequest(id="c1", exec_id="e1", stdin="/in").SerializeToString()),
             ("Wait", pb.WaitRequest(id="c1").SerializeToString()),
             ("Delete", pb.DeleteRequest(id="c1").SerializeToString())]
    small = _limit_bits(128)
    body = ttrpc_pb2.Request(service=TASK, method="Connect").SerializeToString()
    ok = ttrpc_pb2.Response(payload=pb.ConnectResponse(shim_pid=42, task_pid=43).SerializeToString())
    err = ttrpc_pb2.Response()
    err.status.code, err.status.message = Code.NOT_FOUND, "process already finished: not found"
    resp = int(MessageType.RESPONSE)
    return {
        "task-calls-whole": bytes([SERVER, 0]) + _requests(*calls),
        "task-calls-split": bytes([SERVER, 7]) + _requests(*calls[:3]),
        "oversize-header-4mib": bytes([SERVER, 0]) + encode_header(MAX_DATA_LENGTH + 1, 1, 1) + b"\0" * 16,
        "oversize-frame-then-call": bytes([SERVER | small, 5]) + encode_header(200, 1, 1) + b"\xaa" * 200
        + _requests(("State", b""), ("State", b"")),
        "data-frame-on-open-call": bytes([SERVER, 3]) + _requests(("Wait", b""))
        + encode_frame(1, MessageType.DATA, b"x", 1) + encode_frame(3, MessageType.DATA, b"", 4),
        "even-reused-unknown": bytes([SERVER, 1]) + encode_frame(2, 1, body) + encode_frame(5, 1, body)
        + encode_frame(5, 1, body) + encode_frame(7, 9, b"later", 0xFF) + encode_frame(7, 1, b"\xff"),
        "truncated-frame": bytes([SERVER, 0]) + encode_frame(1, 1, body)[:-3],
        "client-answers": bytes([CLIENT | 3 << 3, 2]) + encode_frame(3, resp, err.SerializeToString())
        + encode_frame(1, resp, ok.SerializeToString()) + encode_frame(5, MessageType.DATA, b"")
        + encode_frame(1, resp, b""),
        "client-oversize": bytes([CLIENT | small | 2 << 3, 0]) + encode_header(300, 1, resp) + b"\0" * 300
        + encode_frame(3, resp, b"\x0a\x05ab"),
    }


def write_seeds(directory: str) -> None:
    import pathlib

    for name, data in seed_inputs().items():
        path = pathlib.Path(directory, f"seed-{name}")
        path.write_bytes(data)
        one_input(data)
        print(f"{path}: {len(data)} bytes")


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "--write-seeds":
        write_seeds(argv[2])
        return
    import logging
    import os
    import shlex

    logging.disable(logging.CRITICAL)  # the connections log every dropped or odd frame; millions of lines otherwise
    # libFuzzer runs argv[0] through the shell for -merge (and -fork): make that this interpreter and this file
    argv = [f"{shlex.quote(sys.executable)} {shlex.quote(os.path.abspath(argv[0]))}", *argv[1:]]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
